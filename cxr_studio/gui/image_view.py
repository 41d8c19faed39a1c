"""The central view: the radiograph at full resolution with the heatmap overlay on top.

pyqtgraph, row-major. The heatmap is a uint8 LUT-index image (``render.lut_index``) over the lung
crop with fixed levels, so threshold / colormap / opacity change only the 256-entry lookup table or
the item's opacity: no recomputation, no worker call. The overlay is held at display resolution
(at most ``HEAT_DISPLAY_MAX`` pixels a side; the maps are smooth upsamplings of small activation
grids), which keeps a LUT change well inside one frame even on a 4020x4892 radiograph.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QWidget

from . import window_level as wl
from .outlines import EXTENT_PEN, LESION_PEN, LUNG_PEN, MaskOutline, extent_path

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

HEAT_DISPLAY_MAX = 1024


def _cv2() -> Any:
    import cv2

    return cv2


def _resize(a: np.ndarray, w: int, h: int, area: bool = False) -> np.ndarray:
    cv2 = _cv2()
    if a.shape == (h, w):
        return np.ascontiguousarray(a)
    interp = cv2.INTER_AREA if area else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(a, dtype=np.float32), (int(w), int(h)), interpolation=interp)


class ColorBar(pg.PlotWidget):
    """A vertical colour bar in activation units with a line at the threshold."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedWidth(78)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setMenuEnabled(False)
        pi = self.getPlotItem()
        pi.hideAxis("bottom")
        pi.hideAxis("left")
        pi.showAxis("right")
        pi.getAxis("right").setLabel("activation")
        self.bar = pg.ImageItem(np.arange(256, dtype=np.uint8).reshape(256, 1))
        self.bar.setLevels((0, 255))
        self.addItem(self.bar)
        self.line = pg.InfiniteLine(angle=0, pen=pg.mkPen((255, 255, 255), width=2))
        self.line.setZValue(10)
        self.addItem(self.line)
        self.vrange = (0.0, 1.0)
        self.threshold = 0.0
        self.set_range(0.0, 1.0)

    def set_lut(self, lut: np.ndarray) -> None:
        self.bar.setLookupTable(lut)

    def set_range(self, vmin: float, vmax: float) -> None:
        if not np.isfinite(vmin) or not np.isfinite(vmax) or vmax <= vmin:
            vmin, vmax = float(vmin) if np.isfinite(vmin) else 0.0, (float(vmin) if np.isfinite(vmin) else 0.0) + 1.0
        self.vrange = (float(vmin), float(vmax))
        self.bar.setRect(QRectF(0, vmin, 1, vmax - vmin))
        self.setXRange(0, 1, padding=0)
        self.setYRange(vmin, vmax, padding=0)
        self.set_threshold(self.threshold)

    def set_threshold(self, t: float) -> None:
        self.threshold = float(t)
        lo, hi = self.vrange
        self.line.setValue(lo + self.threshold * (hi - lo))


class WindowLevelViewBox(pg.ViewBox):
    """A ViewBox where a right-drag reports window/level moves and a double right-click a reset
    (the left button still pans, the wheel zooms)."""

    def __init__(self, view: "ImageView", **kw: Any) -> None:
        super().__init__(**kw)
        self._view = view

    def mouseDragEvent(self, ev: Any, axis: Any = None) -> None:  # noqa: N802 - pyqtgraph API
        if ev.button() != Qt.MouseButton.RightButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        d = ev.pos() - ev.buttonDownPos()
        self._view.drag_window(float(d.x()), float(d.y()), start=ev.isStart())

    def mouseClickEvent(self, ev: Any) -> None:  # noqa: N802 - pyqtgraph API
        if ev.button() == Qt.MouseButton.RightButton and ev.double():
            ev.accept()
            self._view.reset_window()
            return
        super().mouseClickEvent(ev)


class ImageView(QWidget):
    """Radiograph + heatmap + lung outline + region of interest, with a colour bar."""

    cursor_info = Signal(str)  # "x=…, y=…, value=…, activation=…" for the status bar
    region_changed = Signal(object)  # (kind, points (N, 2) float array) or None when cleared
    heatmap_drawn = Signal()
    window_changed = Signal(str)  # the status-bar text of the display window

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsView()
        self.vb = WindowLevelViewBox(self, lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setBackgroundColor((16, 16, 16))
        self.graphics.setCentralItem(self.vb)
        self.base = pg.ImageItem(axisOrder="row-major")
        self.base.setAutoDownsample(True)
        self.heat = pg.ImageItem(axisOrder="row-major")
        self.heat.setZValue(10)
        for item in (self.base, self.heat):
            self.vb.addItem(item)
        self.outline = MaskOutline(self.vb, LUNG_PEN, z=20)
        self.lesion_outline = MaskOutline(self.vb, LESION_PEN, z=21)
        self.map_extent = MaskOutline(self.vb, EXTENT_PEN, z=19)  # where the heatmap's cells lie
        self.colorbar = ColorBar()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.graphics, 1)
        lay.addWidget(self.colorbar)
        self.pixels: np.ndarray | None = None
        self.meta: dict[str, Any] = {}
        self.lung_mask: np.ndarray | None = None
        self.window = wl.Window()
        self.window_name = "full"
        self._display_top = 255.0  # the display data's value for 1.0
        self._drag_start = self.window
        self.heat_map: np.ndarray | None = None  # float display-resolution map (for the readout)
        self.heat_rect: tuple[float, float, float, float] | None = None  # x0, y0, w, h
        self.value_range = (0.0, 1.0)
        self.lut = np.zeros((256, 4), np.uint8)
        self.heat_lut = self.lut
        self.heat_valid: np.ndarray | None = None  # display-resolution data mask of the heatmap
        self.roi: pg.ROI | None = None
        self.region_kind: str | None = None
        self.showing_stage = "original"
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)

    # -- image ----------------------------------------------------------------------------------
    def set_image(self, pixels: np.ndarray, fit: bool = True, meta: dict[str, Any] | None = None) -> None:
        """Show a 0..1 grayscale image (the original radiograph) in its default window; ``meta``
        (the Radiograph's) gives its bit depth and DICOM window."""
        new = self.pixels is None or pixels is not self.pixels
        self.pixels = np.asarray(pixels)
        if meta is not None:
            self.meta = dict(meta)
        data, self._display_top = wl.display_data(self.pixels, self.meta)
        if new:
            self.window, self.window_name = wl.Window(), "full"
        self.base.setImage(data, levels=self._levels(), autoLevels=False)
        self.base.setRect(QRectF(0, 0, self.pixels.shape[1], self.pixels.shape[0]))
        self.showing_stage = "original"
        self.heat.setVisible(self.heat_map is not None)
        self._stage_shown(True)
        if new:
            self.window_changed.emit(wl.describe(self.window, self.meta, self.window_name))
        if fit:
            self.fit()

    # -- window / level (display only) ------------------------------------------------------------
    def _levels(self) -> tuple[float, float]:
        lo, hi = self.window.levels
        return lo * self._display_top, hi * self._display_top

    def set_window(self, window: "wl.Window", name: str = "") -> None:
        """Show the radiograph through this window (the base image's levels; nothing recomputed)."""
        self.window, self.window_name = window, name
        if self.pixels is not None and self.showing_stage == "original":
            self.base.setLevels(self._levels())
        self.window_changed.emit(wl.describe(window, self.meta, name))

    def apply_preset(self, name: str) -> None:
        if self.pixels is not None:
            self.set_window(wl.preset(name, self.pixels, self.lung_mask), name)

    def reset_window(self) -> None:
        """Back to the default: the whole range (a DICOM file's own VOI window)."""
        self.set_window(wl.Window(), "full")

    def drag_window(self, dx: float, dy: float, start: bool = False) -> None:
        """A right-drag of (dx, dy) screen pixels since the button went down."""
        if start:
            self._drag_start = self.window
        self.set_window(self._drag_start.dragged(dx, dy))

    def show_stage(self, name: str, array: np.ndarray) -> None:
        """Show a pipeline stage centrally (the overlay stays only on the original)."""
        if name == "original" and self.pixels is not None:
            self.set_image(self.pixels)
            self.base.setLevels(self._levels())
            return
        from cxr_studio.core.render import to_uint8

        a = np.asarray(array, dtype=np.float32)
        self.base.setImage(to_uint8(a), levels=(0, 255), autoLevels=False)
        self.base.setRect(QRectF(0, 0, a.shape[1], a.shape[0]))
        self.showing_stage = name
        self.heat.setVisible(False)
        self._stage_shown(False)
        self.fit()

    def fit(self) -> None:
        """Fit the shown image to the window."""
        r = self.base.boundingRect()
        if r.width() > 0:
            self.vb.setRange(rect=self.base.mapRectToParent(r), padding=0.02)

    # -- heatmap --------------------------------------------------------------------------------
    def set_heatmap(self, map_input: np.ndarray | None, crop_box: tuple[int, int, int, int] | None = None,
                    value_range: tuple[float, float] = (0.0, 1.0), valid: np.ndarray | None = None) -> None:
        """Show a 0..1 map covering the model input, placed over ``crop_box`` (y0, x0, y1, x1) of
        the original; ``value_range`` gives the colour bar its activation units; ``valid`` (bool,
        the map's shape) marks where it has a value: elsewhere it is transparent at any threshold.
        None clears."""
        from cxr_studio.core.render import INDEX_LEVELS, lut_index_with_gaps

        if map_input is None:
            self.heat_map = None
            self.heat.clear()
            self.heat.setVisible(False)
            self.map_extent.set_path(None)
            return
        if crop_box is None:
            if self.pixels is None:
                raise ValueError("No image is shown, so a heatmap has nowhere to go.")
            crop_box = (0, 0, self.pixels.shape[0], self.pixels.shape[1])
        y0, x0, y1, x1 = (int(v) for v in crop_box)
        ch, cw = y1 - y0, x1 - x0
        s = min(1.0, HEAT_DISPLAY_MAX / max(ch, cw))
        dw, dh = max(1, round(cw * s)), max(1, round(ch * s))
        m = _resize(np.asarray(map_input, dtype=np.float32), dw, dh)
        v = None
        if valid is not None:
            v = _cv2().resize(np.asarray(valid, np.uint8), (dw, dh), interpolation=_cv2().INTER_NEAREST) > 0
        self.heat_map = m
        self.heat_valid = v
        self.heat_rect = (float(x0), float(y0), float(cw), float(ch))
        self.heat.setImage(lut_index_with_gaps(m, v), levels=INDEX_LEVELS, autoLevels=False)
        self.heat.setLookupTable(self.heat_lut)
        self.heat.setRect(QRectF(x0, y0, cw, ch))
        self.heat.setVisible(self.showing_stage == "original")
        self.map_extent.set_path(extent_path(valid, (y0, x0, y1, x1)))
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.colorbar.set_range(*self.value_range)
        self.heatmap_drawn.emit()

    def set_lut(self, lut: np.ndarray, threshold: float | None = None) -> None:
        """Swap the overlay's 256-entry lookup table (thresholded already); the only work a
        threshold or colormap change does."""
        from cxr_studio.core.render import no_data_lut

        self.lut = lut
        self.heat_lut = no_data_lut(lut)
        self.heat.setLookupTable(self.heat_lut)
        self.colorbar.set_lut(lut)
        if threshold is not None:
            self.colorbar.set_threshold(threshold)

    def set_opacity(self, opacity: float) -> None:
        self.heat.setOpacity(float(opacity))

    # -- outlines (lungs, lesion) ----------------------------------------------------------------
    def _stage_shown(self, original: bool) -> None:
        for o in (self.outline, self.lesion_outline, self.map_extent):
            o.stage_shown(original)

    @property
    def _outline_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self.outline.data

    def set_lung_mask(self, mask: np.ndarray | None) -> None:
        self.lung_mask = mask
        self.outline.set_mask(mask)

    def show_outline(self, on: bool) -> None:
        self.outline.show(on)

    def set_lesion_mask(self, mask: np.ndarray | None) -> None:
        """The radiologists' lesion outline of this image (None: it has none)."""
        self.lesion_outline.set_mask(mask)

    def show_lesion_outline(self, on: bool) -> None:
        self.lesion_outline.show(on)

    # -- region of interest ---------------------------------------------------------------------
    def start_region(self, kind: str) -> None:
        """Put an editable rectangle or polygon on the image; its changes emit ``region_changed``."""
        if kind not in ("rect", "polygon"):
            raise ValueError(f"A region is a 'rect' or a 'polygon', not {kind!r}.")
        self.clear_region(emit=False)
        h, w = self.pixels.shape if self.pixels is not None else (512, 512)
        cx, cy, r = w / 2, h / 2, min(w, h) / 8
        pen = pg.mkPen((255, 220, 0), width=2)
        if kind == "rect":
            self.roi = pg.RectROI([cx - r, cy - r], [2 * r, 2 * r], pen=pen)
        else:
            pts = [(cx - r, cy), (cx, cy - r), (cx + r, cy), (cx + r * 0.6, cy + r), (cx - r * 0.6, cy + r)]
            self.roi = pg.PolyLineROI(pts, closed=True, pen=pen)
        self.roi.setZValue(30)
        self.region_kind = kind
        self.vb.addItem(self.roi)
        self.roi.sigRegionChangeFinished.connect(lambda *_: self.region_changed.emit(self.region()))
        self.region_changed.emit(self.region())

    def region(self) -> tuple[str, np.ndarray] | None:
        """The current region as (kind, points) in original (x, y) pixel coordinates."""
        if self.roi is None or self.region_kind is None:
            return None
        if self.region_kind == "rect":
            pos, size = self.roi.pos(), self.roi.size()
            pts = np.array([[pos.x(), pos.y()], [pos.x() + size.x(), pos.y() + size.y()]])
        else:
            pts = np.array([[p.x(), p.y()] for p in
                            (self.roi.mapToParent(hp) for _, hp in self.roi.getLocalHandlePositions())])
        return self.region_kind, pts

    def clear_region(self, emit: bool = True) -> None:
        if self.roi is not None:
            self.vb.removeItem(self.roi)
            self.roi = None
            self.region_kind = None
            if emit:
                self.region_changed.emit(None)

    # -- cursor readout -------------------------------------------------------------------------
    def value_at(self, x: float, y: float) -> tuple[float | None, float | None]:
        """(gray value, activation) under an original-image point, None where there is none."""
        gray = act = None
        if self.pixels is not None and self.showing_stage == "original":
            c, r = int(round(x)), int(round(y))
            if 0 <= r < self.pixels.shape[0] and 0 <= c < self.pixels.shape[1]:
                gray = float(self.pixels[r, c])
        if self.heat_map is not None and self.heat_rect is not None and self.heat.isVisible():
            x0, y0, w, h = self.heat_rect
            dh, dw = self.heat_map.shape
            j, i = int((x + 0.5 - x0) * dw / w), int((y + 0.5 - y0) * dh / h)
            if 0 <= i < dh and 0 <= j < dw and (self.heat_valid is None or self.heat_valid[i, j]):
                lo, hi = self.value_range
                act = lo + float(self.heat_map[i, j]) * (hi - lo)
        return gray, act

    def _mouse_moved(self, pos: Any) -> None:
        if self.base.image is None:
            return
        p = self.vb.mapSceneToView(pos)
        x, y = p.x(), p.y()
        h, w = self.base.image.shape[:2]
        if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
            self.cursor_info.emit("")
            return
        if self.showing_stage != "original":
            v = self.base.image[int(round(y)), int(round(x))] / 255.0
            self.cursor_info.emit(f"{self.showing_stage}: x={x:.0f}, y={y:.0f}, value={v:.3f}")
            return
        gray, act = self.value_at(x, y)
        text = f"x={x:.0f}, y={y:.0f}"
        if gray is not None:
            text += f", value={gray:.3f}"
        if act is not None:
            text += f", activation={act:.4g}"
        self.cursor_info.emit(text)
