"""The welcome page shown when the app starts without an image: open the demo, a radiograph (with
the shipped TB model when one ships) or a recent file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget


def open_button_text(m: Any) -> str:
    with_model = f" with the {m.name}" if m is not None else ""
    return f"Open a radiograph{with_model}…  (PNG, JPEG, TIFF, DICOM; or drop a file here)"


def shipped_note(m: Any) -> str:
    if m is None:
        return "No model for real radiographs ships with this installation: load your checkpoint in the Models dock."
    auc = f", AUC {m.test_auc:.3f} on held-out test images" if m.test_auc is not None else ""
    return f"Radiographs open with the shipped {m.name} (trained on {m.trained_on}{auc}); other models load from the Models dock."


class WelcomePage(QWidget):
    demo_requested = Signal()
    open_requested = Signal()
    recent_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None, defer_models: bool = False) -> None:
        """``defer_models``: torch is still loading; `show_models` fills in the shipped model later."""
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        box = QWidget()
        box.setMaximumWidth(720)
        outer.addWidget(box, 0, Qt.AlignmentFlag.AlignHCenter)
        outer.addStretch(2)
        lay = QVBoxLayout(box)
        title = QLabel("<h1>CXR Studio</h1><p>See what chest X-ray classifiers look at: salient network "
                       "activations, Grad-CAM and filter mosaics over the radiograph.</p>")
        title.setWordWrap(True)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay.addWidget(title)
        self.demo_button = QPushButton("Open the demo (synthetic phantom + demo model)")
        self.demo_button.setMinimumHeight(40)
        self.demo_button.clicked.connect(self.demo_requested.emit)
        lay.addWidget(self.demo_button)
        self.open_button = QPushButton("Open a radiograph…")
        self.open_button.setMinimumHeight(40)
        self.open_button.clicked.connect(self.open_requested.emit)
        lay.addWidget(self.open_button)
        self.model_note = QLabel("Loading the models…")
        self.model_note.setWordWrap(True)
        lay.addWidget(self.model_note)
        lay.addWidget(QLabel("Recent files"))
        self.recent = QListWidget()
        self.recent.setMaximumHeight(180)
        self.recent.itemActivated.connect(lambda it: self.recent_requested.emit(it.data(Qt.ItemDataRole.UserRole)))
        lay.addWidget(self.recent)
        if not defer_models:
            self.show_models()

    def show_models(self) -> None:
        from cxr_studio.core.models.shipped import default_shipped_model

        m = default_shipped_model()  # read once for both texts
        self.open_button.setText(open_button_text(m))
        self.model_note.setText(shipped_note(m))

    def set_recent(self, files: list[str]) -> None:
        self.recent.clear()
        for f in files:
            it = QListWidgetItem(f"{Path(f).name}    ({Path(f).parent})")
            it.setData(Qt.ItemDataRole.UserRole, f)
            self.recent.addItem(it)
