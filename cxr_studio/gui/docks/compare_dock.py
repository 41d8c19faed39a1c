"""Compare view: the same image through every loaded model (the paper's Fig. 3), each map in a pane
as large as the dock allows: per model the deepest conv layer's strongest channel and/or Grad-CAM,
titled with the model's prediction; the session's threshold, opacity and colormap (LUT only); zoom
and pan linked across the panes (a toggle); and a difference view of two panes (A - B, red where A is
higher, blue where B is). Exportable as one figure."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                               QWidget)

from .. import jobs

DISPLAY_MAX = 1024  # radiograph side in the compare panes and the exported figure
SHOW = {"both": "channel and Grad-CAM", "activation": "strongest channel", "gradcam": "Grad-CAM"}


def _small(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    from cxr_studio.core.imaging.stages import shrink  # on first use: not at the window's start-up

    return shrink(pixels, DISPLAY_MAX)


def _place(m: np.ndarray, crop_box: tuple[int, int, int, int], shape: tuple[int, int], s: float,
           nearest: bool = False) -> np.ndarray:
    """A model-input map resampled over the crop box of a radiograph shown at scale ``s`` (0 outside)."""
    from cxr_studio.core.imaging.stages import place_map

    return place_map(m, crop_box, shape, s, nearest=nearest)


def grid_shape(n: int, width: float, height: float, aspect: float) -> tuple[int, int]:
    """(rows, cols) giving ``n`` panes of an image ``aspect`` (h / w) the largest size in width x height."""
    best, shape = -1.0, (1, max(1, n))
    for cols in range(1, max(1, n) + 1):
        rows = math.ceil(n / cols)
        scale = min(width / cols, height / rows / aspect)
        if scale > best + 1e-9:
            best, shape = scale, (rows, cols)
    return shape


def difference_lut(threshold: float) -> np.ndarray:
    """Diverging table for (A - B + 1) / 2: blue below the middle, red above; |A - B| < threshold clear."""
    from cxr_studio.core.render import colormap_lut

    lut = colormap_lut("jet").copy()
    d = np.abs(np.arange(256) - 127.5) / 127.5
    lut[:, 3] = np.where(d < max(threshold, 1.0 / 255), 0, 255)
    return lut


@dataclass
class Pane:
    title: str
    map_input: np.ndarray  # (N, N) 0..1 (difference panes: (A - B + 1) / 2)
    crop_box: tuple[int, int, int, int]
    valid: np.ndarray | None
    difference: bool = False


class CompareDock(QDockWidget):
    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Compare models", parent)
        self.setObjectName("CompareDock")
        self.session, self.controller = session, controller
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(2, 2, 2, 2)
        bar = QHBoxLayout()
        self.show_combo = QComboBox()
        for k, label in SHOW.items():
            self.show_combo.addItem(label, k)
        self.show_combo.currentIndexChanged.connect(lambda _: self._rebuild())
        bar.addWidget(self.show_combo)
        self.link = QCheckBox("Link zoom/pan")
        self.link.setChecked(True)
        self.link.toggled.connect(self._link_views)
        bar.addWidget(self.link)
        self.diff = QCheckBox("Difference")
        self.diff.setToolTip("Add a pane with A - B (red: A higher, blue: B higher)")
        self.diff_a, self.diff_b = QComboBox(), QComboBox()
        for combo, name in ((self.diff_a, "A"), (self.diff_b, "B")):
            combo.setToolTip(f"Pane {name} of the difference A - B")
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for wdg in (self.diff, self.diff_a, self.diff_b):
            bar.addWidget(wdg)
        self.diff.toggled.connect(lambda _: self._rebuild())
        self.diff_a.activated.connect(lambda _: self._rebuild())
        self.diff_b.activated.connect(lambda _: self._rebuild())
        bar.addStretch(1)
        self.shipped_button = QPushButton("Guided vs unguided")
        self.shipped_button.setToolTip("Load every shipped model for real radiographs (the lesion-guided TB model and "
                                       "its unguided twin, same recipe, split and seed) and compare them here")
        self.shipped_button.clicked.connect(self.compare_shipped)
        bar.addWidget(self.shipped_button)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bar.addWidget(self.refresh_button)
        self.pop_button = QPushButton("Pop out")
        self.pop_button.setToolTip("Show the comparison in its own, larger window")
        self.pop_button.clicked.connect(self.pop_out)
        bar.addWidget(self.pop_button)
        lay.addLayout(bar)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(160)
        self.graphics.ci.layout.setSpacing(4)
        self.graphics.ci.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.graphics, 1)
        self.info = QLabel("Load models to compare them on this image.")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.setWidget(w)
        self.rows: dict[str, jobs.CompareRow] = {}
        self.panes: list[Pane] = []
        self.heat_items: list[pg.ImageItem] = []
        self.diff_items: list[pg.ImageItem] = []
        self.viewboxes: list[pg.ViewBox] = []
        self.small: np.ndarray | None = None
        self.scale = 1.0
        self._stale = True
        self._grid = (0, 0)
        for name in ("models", "radiograph", "preprocessed", "ranking", "class_index", "scale"):
            getattr(session.events, name).connect(lambda _v: self._mark_stale())
        for name in ("threshold", "colormap", "opacity"):
            getattr(session.events, name).connect(lambda _v: self.apply_display())
        self.visibilityChanged.connect(lambda vis: self.refresh() if vis and self._stale else None)

    def compare_shipped(self) -> list[str]:
        """One click: load the shipped models for real radiographs not loaded yet and show this view.
        Returns the paths asked for."""
        from pathlib import Path

        from cxr_studio.core.models.shipped import shipped_models

        from .. import layout

        loaded = {Path(str(getattr(m, "path", ""))).resolve() for m in self.session.models.values()}
        wanted = [m.path for m in shipped_models() if m.kind == "radiographs"]
        if len(wanted) < 2:
            self.info.setText("Fewer than two models for real radiographs ship with this installation: load the "
                              "other one yourself (File > Load checkpoint).")
        for p in wanted:
            if Path(p).resolve() not in loaded:
                self.controller.load_checkpoint(str(p))
        layout.show_bottom(self.window(), self)
        return [str(p) for p in wanted]

    def _mark_stale(self) -> None:
        self._stale = True
        if self.shown() and self.session.preprocessed is not None:
            from PySide6.QtCore import QTimer

            QTimer.singleShot(0, self.refresh)

    def pop_out(self) -> None:
        """Float the dock at a size where every pane is readable."""
        self.setFloating(True)
        self.resize(1200, 800)
        self.raise_()
        from PySide6.QtCore import QTimer

        QTimer.singleShot(50, self._rebuild)  # once the new size is laid out

    def fit(self) -> None:
        """Fit the first pane to its cell (the others follow while linked)."""
        for vb in self.viewboxes[:1] if self.link.isChecked() else self.viewboxes:
            vb.autoRange(padding=0.01)

    def shown(self) -> bool:
        """Visible on screen (not hidden behind another tab)."""
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def refresh(self) -> None:
        """Compute one row per loaded model (forward passes and Grad-CAM in the worker)."""
        s = self.session
        if s.radiograph is None or not s.models:
            self.rows.clear()
            self._rebuild()
            return
        self._stale = False
        self.rows = {mid: r for mid, r in self.rows.items() if mid in s.models}
        for mid in list(s.models):
            self.controller.ensure_forward(mid, lambda fwd, mid=mid: self._row_for(mid, fwd))

    def _row_for(self, mid: str, fwd: Any) -> None:
        c, s = self.controller, self.session
        res = s.cache.pipeline_for(s.effective_spec(mid))
        loaded = s.models.get(mid)
        if res is None or loaded is None:
            return
        self.controller.bridge.submit(
            f"compare ({mid})", jobs.compare_row, mid, loaded, res.preprocessed, fwd, s.ranking, s.region,
            s.class_index, s.scale, key=f"compare:{mid}",
            on_result=lambda row, rad=s.radiograph: self._row_done(row, rad), on_error=c.error.emit)

    def _row_done(self, row: jobs.CompareRow, radiograph: Any) -> None:
        if row.model_id in self.session.models and radiograph is self.session.radiograph:  # else: another image
            self.rows[row.model_id] = row
            self._rebuild()

    # -- panes -------------------------------------------------------------------------------------
    def _model_panes(self) -> list[Pane]:
        show = self.show_combo.currentData()
        panes = []
        for mid in (m for m in self.session.models if m in self.rows):
            row = self.rows[mid]
            names = list(getattr(self.session.models[mid], "class_names", []) or [])
            p = float(row.probabilities[-1]) if len(row.probabilities) else float("nan")
            pred = f"p({names[-1] if names else 'last'}) = {p:.2f}"
            if show in ("both", "activation"):
                panes.append(Pane(f"{mid} · {row.layer} ch {row.channel} · {pred}", row.activation,
                                  row.crop_box, row.valid))
            if show in ("both", "gradcam"):
                panes.append(Pane(f"{mid} · Grad-CAM · {pred}", row.gradcam, row.crop_box, row.valid))
        return panes

    def _difference(self, panes: list[Pane]) -> Pane | None:
        names = [p.title for p in panes]
        for combo, default in ((self.diff_a, 0), (self.diff_b, 1)):
            keep = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentIndex(names.index(keep) if keep in names else min(default, len(names) - 1))
            combo.blockSignals(False)
        if not self.diff.isChecked() or len(panes) < 2:
            return None
        a, b = panes[self.diff_a.currentIndex()], panes[self.diff_b.currentIndex()]
        if a.crop_box != b.crop_box or a.map_input.shape != b.map_input.shape:
            self.info.setText("The difference needs two maps on the same crop (models with the same preprocessing).")
            return None
        valid = None if a.valid is None or b.valid is None else (a.valid & b.valid)
        d = (np.asarray(a.map_input, np.float32) - np.asarray(b.map_input, np.float32) + 1.0) / 2.0
        return Pane(f"difference: {a.title.split(' · ')[0]} - {b.title.split(' · ')[0]}", d, a.crop_box, valid, True)

    def _rebuild(self) -> None:
        from cxr_studio.core.render import INDEX_LEVELS, lut_index_with_gaps, to_uint8

        self.graphics.clear()
        self.heat_items.clear()
        self.diff_items.clear()
        self.viewboxes = []
        rad = self.session.radiograph
        if rad is None or not self.rows:
            self.panes = []
            self.info.setText("Load models to compare them on this image.")
            return
        self.small, self.scale = _small(rad.pixels)
        panes = self._model_panes()
        diff = self._difference(panes)
        self.panes = panes + ([diff] if diff is not None else [])
        base = to_uint8(self.small)
        self._grid = rows, cols = self._best_grid()
        for i, pane in enumerate(self.panes):
            cell = self.graphics.addLayout(row=i // cols, col=i % cols)
            cell.addLabel(pane.title, row=0, col=0, size="9pt")
            cell.layout.setRowMaximumHeight(0, 18)
            cell.layout.setRowStretchFactor(1, 100)
            cell.layout.setContentsMargins(1, 1, 1, 1)
            vb = cell.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
            valid = None if pane.valid is None else _place(pane.valid.astype(np.float32), pane.crop_box,
                                                           self.small.shape, self.scale, nearest=True) > 0.5
            heat = pg.ImageItem(lut_index_with_gaps(_place(pane.map_input, pane.crop_box, self.small.shape, self.scale),
                                                    valid if valid is not None else self._crop_mask(pane)),
                                axisOrder="row-major", levels=INDEX_LEVELS)
            heat.setZValue(1)
            vb.addItem(pg.ImageItem(base, axisOrder="row-major", levels=(0, 255)))
            vb.addItem(heat)
            (self.diff_items if pane.difference else self.heat_items).append(heat)
            vb.autoRange(padding=0.01)
            self.viewboxes.append(vb)
        self._link_views(self.link.isChecked())
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, self.fit)  # once the panes have their sizes
        self.info.setText(f"{len(self.rows)} model(s), the deepest conv layer of each; shared threshold, opacity, "
                          f"colormap{' and zoom' if self.link.isChecked() else ''}. Right-drag or wheel to zoom.")
        self.apply_display()

    def resizeEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        """Panes as large as the dock allows: a new size may want another grid."""
        super().resizeEvent(e)
        if self.panes and self.small is not None and self._grid != self._best_grid():
            from PySide6.QtCore import QTimer

            QTimer.singleShot(0, self._rebuild)

    def _best_grid(self) -> tuple[int, int]:
        h, w = self.small.shape if self.small is not None else (1, 1)
        return grid_shape(len(self.panes), max(1, self.graphics.width()), max(1, self.graphics.height() - 24), h / w)

    def _crop_mask(self, pane: Pane) -> np.ndarray:
        return _place(np.ones_like(pane.map_input), pane.crop_box, self.small.shape, self.scale, nearest=True) > 0.5

    def _link_views(self, on: bool) -> None:
        """Zoom and pan of every pane follow the first one (or each pane on its own)."""
        first = self.viewboxes[0] if self.viewboxes else None
        for vb in self.viewboxes[1:]:
            vb.setXLink(first if on else None)
            vb.setYLink(first if on else None)
        if on and first is not None:
            first.autoRange(padding=0.01)

    def apply_display(self) -> None:
        """Shared threshold / colormap / opacity: LUT and opacity only."""
        from cxr_studio.core.render import colormap_lut, no_data_lut, threshold_lut

        s = self.session
        lut = no_data_lut(threshold_lut(colormap_lut(s.colormap), s.threshold))
        for item in self.heat_items:
            item.setLookupTable(lut)
            item.setOpacity(s.opacity)
        dlut = no_data_lut(difference_lut(s.threshold))
        for item in self.diff_items:
            item.setLookupTable(dlut)
            item.setOpacity(s.opacity)

    def figure(self) -> np.ndarray:
        """The compare view as one RGB figure (rows: models; columns: strongest channel, Grad-CAM)."""
        import cv2

        from cxr_studio.core.render import overlay

        if self.small is None or not self.rows:
            raise ValueError("Nothing to compare yet: open an image and load at least one model.")
        s = self.session
        tiles = []
        for mid in (m for m in s.models if m in self.rows):
            row = self.rows[mid]
            cells = [overlay(self.small, _place(m, row.crop_box, self.small.shape, self.scale), s.colormap,
                             s.threshold, s.opacity) for m in (row.activation, row.gradcam)]
            body = np.concatenate([cells[0], np.full((cells[0].shape[0], 8, 3), 255, np.uint8), cells[1]], axis=1)
            head = np.full((28, body.shape[1], 3), 255, np.uint8)
            text = f"{mid}: {row.layer} channel {row.channel} | Grad-CAM"
            cv2.putText(head, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.concatenate([head, body], axis=0))
        width = max(t.shape[1] for t in tiles)
        tiles = [np.pad(t, ((0, 8), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
        return np.concatenate(tiles, axis=0)
