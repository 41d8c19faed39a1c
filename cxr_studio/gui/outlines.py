"""Mask outlines drawn over the radiograph: the lungs (green) and, when the image has one, the
radiologists' lesion outline (magenta, dashed: a colour the jet overlay never uses); and the frame of
a layer map's extent (grey, dotted): where the layer's cells lie, so a map cut off straight at its
edge reads as "no cells beyond here" (the paper's unpadded convolutions), not as a drawing fault.

Each `MaskOutline` owns one pyqtgraph curve, the traced boundary and whether the user wants it; it
is shown only on the original radiograph (not on pipeline stages).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

OUTLINE_MAX = 768  # a mask is downsampled to this before tracing its outline
LUNG_PEN = {"color": (80, 255, 80), "width": 1.5}
LESION_PEN = {"color": (255, 60, 255), "width": 2.0, "style": Qt.PenStyle.DashLine}
EXTENT_PEN = {"color": (210, 210, 210, 150), "width": 1.0, "style": Qt.PenStyle.DotLine}


def outline_path(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) arrays of the mask's boundary in original pixel coordinates, NaN between contours.

    A large mask is reduced by a whole factor k (area mean of k x k blocks, on 0/255 bytes: the fast
    path of OpenCV's area resize, about 25 ms for a 4020x4892 Shenzhen mask instead of 160 ms at a
    fractional scale on floats) so that its longer side is at most ``OUTLINE_MAX``."""
    import cv2  # imported on first use: the window shows before cv2 and skimage load
    from skimage.measure import find_contours

    m = np.asarray(mask)
    h, w = m.shape
    k = max(1, -(-max(h, w) // OUTLINE_MAX))
    if k > 1:
        m8 = m.view(np.uint8) if m.dtype == bool else (m > 0.5).view(np.uint8)
        m8 = cv2.copyMakeBorder(m8, 0, -h % k, 0, -w % k, cv2.BORDER_CONSTANT, value=0)
        np.multiply(m8, 255, out=m8)  # a copy already (copyMakeBorder): 0/1 -> 0/255 in place
        m = cv2.resize(m8, (m8.shape[1] // k, m8.shape[0] // k), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    else:
        m = m.astype(np.float32)
    small = np.pad(m, 1)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for c in find_contours(small, 0.5):
        if len(c) < 8:
            continue
        ys.append((c[:, 0] - 1 + 0.5) * k - 0.5)
        xs.append((c[:, 1] - 1 + 0.5) * k - 0.5)
        ys.append(np.array([np.nan]))
        xs.append(np.array([np.nan]))
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


def extent_path(valid: np.ndarray | None, crop_box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The closed frame (x, y) on the original radiograph around where a map has values: the bounding
    box of ``valid`` ((N, N) bool on the model input) through ``crop_box`` (y0, x0, y1, x1), in the
    heatmap image's own coordinates (input pixel i spans [x0 + i*s, x0 + (i+1)*s]). None when the
    map has values everywhere (or nowhere): nothing to mark."""
    if valid is None:
        return None
    v = np.asarray(valid, bool)
    if v.all() or not v.any():
        return None
    rows, cols = np.flatnonzero(v.any(axis=1)), np.flatnonzero(v.any(axis=0))
    y0, x0, y1, x1 = (float(c) for c in crop_box)
    sy, sx = (y1 - y0) / v.shape[0], (x1 - x0) / v.shape[1]
    top, bottom = y0 + rows[0] * sy, y0 + (rows[-1] + 1) * sy
    left, right = x0 + cols[0] * sx, x0 + (cols[-1] + 1) * sx
    return np.array([left, right, right, left, left]), np.array([top, top, bottom, bottom, top])


class MaskOutline:
    """One outline on the view box: ``set_mask`` traces it, ``show`` is the user's toggle."""

    def __init__(self, view_box: Any, pen: dict[str, Any], z: float = 20) -> None:
        self.item = pg.PlotDataItem(pen=pg.mkPen(**pen), connect="finite")
        self.item.setZValue(z)
        view_box.addItem(self.item)
        self.data: tuple[np.ndarray, np.ndarray] | None = None
        self.wanted = True
        self.on_original = True

    def set_mask(self, mask: np.ndarray | None) -> None:
        self.set_path(None if mask is None or not np.any(mask) else outline_path(mask))

    def set_path(self, data: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Draw a ready (x, y) path (None: nothing)."""
        self.data = data
        self.item.setData(*(data if data is not None else ([], [])), connect="finite")
        self.refresh()

    def show(self, on: bool) -> None:
        self.wanted = bool(on)
        self.refresh()

    def stage_shown(self, original: bool) -> None:
        self.on_original = bool(original)
        self.refresh()

    def refresh(self) -> None:
        self.item.setVisible(self.wanted and self.data is not None and self.on_original)

    def isVisible(self) -> bool:  # noqa: N802 - reads like the Qt item it stands for
        return bool(self.item.isVisible())
