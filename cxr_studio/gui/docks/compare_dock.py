"""Compare view: the same image through every loaded model, one row per model (the paper's Fig. 3):
the deepest conv layer's strongest channel beside Grad-CAM, sharing the session's threshold, opacity
and colormap, with linked zoom; exportable as one figure."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF
from PySide6.QtWidgets import QDockWidget, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .. import jobs

DISPLAY_MAX = 512  # radiograph side in the compare view and the exported figure


def _small(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    h, w = pixels.shape
    s = min(1.0, DISPLAY_MAX / max(h, w))
    if s < 1:
        pixels = cv2.resize(pixels, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return pixels, s


def _place(m: np.ndarray, crop_box: tuple[int, int, int, int], shape: tuple[int, int], s: float) -> np.ndarray:
    """A model-input map resampled over the crop box of a radiograph shown at scale ``s``."""
    import cv2

    y0, x0, y1, x1 = (int(round(v * s)) for v in crop_box)
    out = np.zeros(shape, np.float32)
    y1, x1 = min(max(y1, y0 + 1), shape[0]), min(max(x1, x0 + 1), shape[1])
    out[y0:y1, x0:x1] = cv2.resize(np.asarray(m, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out


class CompareDock(QDockWidget):
    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Compare models", parent)
        self.setObjectName("CompareDock")
        self.session, self.controller = session, controller
        w = QWidget()
        lay = QVBoxLayout(w)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(200)
        lay.addWidget(self.graphics, 1)
        row = QHBoxLayout()
        self.info = QLabel("Load models to compare them on this image.")
        self.info.setWordWrap(True)
        row.addWidget(self.info, 1)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        row.addWidget(self.refresh_button)
        self.pop_button = QPushButton("Pop out")
        self.pop_button.setToolTip("Show the comparison in its own, larger window")
        self.pop_button.clicked.connect(self.pop_out)
        row.addWidget(self.pop_button)
        lay.addLayout(row)
        self.setWidget(w)
        self.rows: dict[str, jobs.CompareRow] = {}
        self.heat_items: list[pg.ImageItem] = []
        self.small: np.ndarray | None = None
        self.scale = 1.0
        self._stale = True
        for name in ("models", "radiograph", "preprocessed", "ranking", "class_index", "scale"):
            getattr(session.events, name).connect(lambda _v: self._mark_stale())
        for name in ("threshold", "colormap", "opacity"):
            getattr(session.events, name).connect(lambda _v: self.apply_display())
        self.visibilityChanged.connect(lambda vis: self.refresh() if vis and self._stale else None)

    def _mark_stale(self) -> None:
        self._stale = True
        if self.shown() and self.session.preprocessed is not None:
            from PySide6.QtCore import QTimer

            QTimer.singleShot(0, self.refresh)

    def pop_out(self) -> None:
        """Float the dock at a size where every row is readable."""
        self.setFloating(True)
        self.resize(900, min(1000, 120 + 260 * max(1, len(self.rows))))
        self.raise_()
        from PySide6.QtCore import QTimer

        QTimer.singleShot(50, self.fit)  # once the new size is laid out

    def fit(self) -> None:
        """Fit every image to its cell (the others follow through the link)."""
        for vb in getattr(self, "viewboxes", []):
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
        res = c.prep_cache.get(c.spec_key(c.spec_for(mid)))
        loaded = s.models.get(mid)
        if res is None or loaded is None:
            return
        self.controller.bridge.submit(
            f"compare ({mid})", jobs.compare_row, mid, loaded, res.preprocessed, fwd, s.ranking, s.region,
            s.class_index, s.scale, key=f"compare:{mid}", on_result=self._row_done, on_error=c.error.emit)

    def _row_done(self, row: jobs.CompareRow) -> None:
        if row.model_id in self.session.models:
            self.rows[row.model_id] = row
            self._rebuild()

    def _rebuild(self) -> None:
        self.graphics.clear()
        self.heat_items.clear()
        self.viewboxes: list[pg.ViewBox] = []
        rad = self.session.radiograph
        if rad is None or not self.rows:
            self.info.setText("Load models to compare them on this image.")
            return
        self.small, self.scale = _small(rad.pixels)
        from cxr_studio.core.render import INDEX_LEVELS, lut_index, to_uint8

        first: pg.ViewBox | None = None
        base = to_uint8(self.small)
        for r, mid in enumerate(m for m in self.session.models if m in self.rows):
            row = self.rows[mid]
            names = list(getattr(self.session.models[mid], "class_names", []) or [])
            p = float(row.probabilities[-1]) if len(row.probabilities) else float("nan")
            label = (f"<b>{mid}</b><br>{row.layer} ch {row.channel}<br>"
                     f"p({names[-1] if names else 'last'}) = {p:.2f}<br><i>channel | Grad-CAM</i>")
            self.graphics.addLabel(label, row=r, col=0)
            for c, m in enumerate((row.activation, row.gradcam)):
                vb = self.graphics.addViewBox(row=r, col=c + 1, lockAspect=True, invertY=True, enableMenu=False)
                img = pg.ImageItem(base, axisOrder="row-major", levels=(0, 255))
                heat = pg.ImageItem(lut_index(_place(m, row.crop_box, self.small.shape, self.scale)),
                                    axisOrder="row-major", levels=INDEX_LEVELS)
                heat.setZValue(1)
                vb.addItem(img)
                vb.addItem(heat)
                self.heat_items.append(heat)
                vb.autoRange(padding=0.01)
                if first is None:
                    first = vb
                else:  # linked zoom/pan; x only: with locked aspect, y follows (linking both feeds back)
                    vb.setXLink(first)
                self.viewboxes.append(vb)
        self.graphics.ci.layout.setColumnMaximumWidth(0, 170)
        self.info.setText(f"{len(self.rows)} model(s), one row each: the deepest conv layer's strongest channel "
                          "and Grad-CAM (shared threshold, opacity and zoom)")
        self.apply_display()

    def apply_display(self) -> None:
        """Shared threshold / colormap / opacity: LUT and opacity only."""
        from cxr_studio.core.render import colormap_lut, threshold_lut

        s = self.session
        lut = threshold_lut(colormap_lut(s.colormap), s.threshold)
        for item in self.heat_items:
            item.setLookupTable(lut)
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
