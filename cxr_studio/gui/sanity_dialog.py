"""Inspect > Sanity check: the heatmap on screen beside the same heatmap of the randomised model.

The randomised model is a copy whose layers from the classifier down to the explained one are
re-initialised (`core.inspect.sanity_view`); it is computed in the worker (cancellable) and shown in
a non-modal window with the Spearman correlation, SSIM and the verdict (a faithful map changes:
Spearman below 0.5). The model on screen is never modified.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QDialog, QGridLayout, QLabel, QPushButton, QWidget

from cxr_studio.core.inspect.method_names import LABELS

SIDE = 420  # pixels of each picture in the window


def sanity_job(loaded: Any, prep: Any, layer: str, channel: Any, method: str, class_index: Any, scale: str,
               ranking: str, region: Any, cancel: Any = None, progress: Any = None) -> Any:
    """Worker job: `sanity_view` of the current view (cancellable)."""
    from cxr_studio.core.inspect.sanity_view import sanity_view

    if progress is not None:
        progress(0.1, "trained and randomised model")
    return sanity_view(loaded, prep, layer, channel, method, class_index, scale, ranking, region, cancel=cancel)


def picture(pixels: np.ndarray, map_input: np.ndarray, crop_box: Any, colormap: str, threshold: float,
            opacity: float) -> np.ndarray:
    """(h, w, 3) uint8: the map over the radiograph, shrunk to `SIDE` on the long side."""
    from cxr_studio.core.imaging.stages import place_map, scaled_box, shrink
    from cxr_studio.core.render import overlay

    small, s = shrink(pixels, SIDE)
    heat = place_map(map_input, crop_box, small.shape, s)
    return overlay(np.clip(small, 0, 1), heat, colormap, threshold, opacity, box=scaled_box(crop_box, small.shape, s))


def _pixmap(rgb: np.ndarray) -> QPixmap:
    rgb = np.ascontiguousarray(rgb)
    img = QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0], QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())


class SanityDialog(QDialog):
    def __init__(self, parent: QWidget | None, what: str) -> None:
        super().__init__(parent)
        self.setObjectName("SanityDialog")
        self.setWindowTitle(f"Sanity check — {what}")
        self.setModal(False)
        grid = QGridLayout(self)
        self.titles = [QLabel("Trained model"), QLabel("Randomised model")]
        self.pictures = [QLabel(), QLabel()]
        for col, (t, p) in enumerate(zip(self.titles, self.pictures)):
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            p.setMinimumSize(SIDE, SIDE)
            p.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(t, 0, col)
            grid.addWidget(p, 1, col)
        self.verdict = QLabel("Computing the same map on a randomised copy of the model…")
        self.verdict.setWordWrap(True)
        grid.addWidget(self.verdict, 2, 0, 1, 2)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        grid.addWidget(close, 3, 1, alignment=Qt.AlignmentFlag.AlignRight)
        self.result: Any = None

    def show_result(self, result: Any, pixels: np.ndarray, crop_box: Any, session: Any) -> None:
        self.result = result
        for lbl, hm in zip(self.pictures, (result.trained, result.randomised)):
            pm = _pixmap(picture(pixels, hm.map_input, crop_box, session.colormap, session.threshold,
                                 max(session.opacity, 0.5)))
            lbl.setPixmap(pm)
            lbl.setMinimumSize(pm.size())
        self.titles[1].setText(f"Randomised model (down to {result.randomised_down_to})")
        self.verdict.setText(result.summary())
        self.adjustSize()

    def show_failure(self, message: str) -> None:
        self.verdict.setText("The sanity check stopped: " + ("cancelled." if message == "cancelled" else message))


def run_sanity_check(window: Any) -> SanityDialog | None:
    """Start the check of the view on screen; returns the dialog (None when there is nothing to check)."""
    s, c = window.session, window.controller
    loaded, prep, hm = c.loaded(), s.preprocessed, s.heatmap
    if loaded is None or prep is None or s.layer is None or hm is None:
        window.statusBar().showMessage("Open an image and a model first: the sanity check explains the map on screen.",
                                       8000)
        return None
    method = hm.method
    channel = hm.channel if hm.channel is not None else s.channel
    what = f"{LABELS.get(method, method)} · {hm.layer}" + (f" · channel {hm.channel}" if hm.channel is not None else "")
    dialog = SanityDialog(window, what)
    dialog.show()
    pixels, crop = prep.original, prep.geometry.crop_box
    window.bridge.submit("sanity check", sanity_job, loaded, prep, hm.layer, channel, method, s.class_index,
                         s.scale, s.ranking if s.ranking != "region" else "max", None, cancellable=True,
                         on_result=lambda r: dialog.show_result(r, pixels, crop, s),
                         on_error=dialog.show_failure)
    window.sanity_dialog = dialog
    return dialog
