"""The main window's status bar: cursor readout, window/level with its presets, what is running
with a Cancel button for long jobs, and how long the last step took."""
from __future__ import annotations

from typing import Any

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QPushButton

from .window_level import PRESETS

PRESET_PROMPT = "W/L preset…"


def build(window: Any) -> None:
    """Create the status-bar widgets as attributes of ``window`` (a MainWindow)."""
    w = window
    sb = w.statusBar()
    w.cursor_label = QLabel("")
    w.busy_label = QLabel("ready")
    w.step_label = QLabel("")
    w.wl_label = QLabel("")
    w.wl_label.setToolTip("Window/level of the radiograph (display only): right-drag to change it, "
                          "double right-click to reset")
    w.wl_preset = QComboBox()
    w.wl_preset.addItems([PRESET_PROMPT, *PRESETS])
    w.wl_preset.setToolTip("Window/level presets (display only)")

    def preset_chosen(index: int) -> None:
        if index > 0:
            w.view.apply_preset(w.wl_preset.itemText(index))
        w.wl_preset.setCurrentIndex(0)

    w.wl_preset.activated.connect(preset_chosen)
    w.cancel_button = QPushButton("Cancel")
    w.cancel_button.setToolTip("Stop the running forward pass, export or other long job (Esc)")
    w.cancel_button.setShortcut(QKeySequence("Esc"))
    w.cancel_button.clicked.connect(w.bridge.cancel_all)
    w.cancel_button.setVisible(False)
    w.prediction_label = QLabel("")
    w.prediction_label.setStyleSheet("font-weight: bold")
    w.prediction_label.setToolTip("The current model's prediction for this image (Models dock for every class)")

    def show_prediction(_: Any = None) -> None:
        from .docks.models_dock import prediction_summary

        w.prediction_label.setText(prediction_summary(w.session))

    for ev in (w.session.events.forward, w.session.events.current_model_id, w.session.events.radiograph):
        ev.connect(show_prediction)
    sb.addWidget(w.cursor_label, 1)
    for widget in (w.prediction_label, w.wl_label, w.wl_preset, w.busy_label, w.cancel_button, w.step_label):
        sb.addPermanentWidget(widget)
