"""The welcome page shown when the app starts without an image: open the demo, an image or a
recent file."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget


class WelcomePage(QWidget):
    demo_requested = Signal()
    open_requested = Signal()
    recent_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
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
        self.open_button = QPushButton("Open a radiograph…  (PNG, JPEG, TIFF, DICOM; or drop a file here)")
        self.open_button.clicked.connect(self.open_requested.emit)
        lay.addWidget(self.open_button)
        lay.addWidget(QLabel("Recent files"))
        self.recent = QListWidget()
        self.recent.setMaximumHeight(180)
        self.recent.itemActivated.connect(lambda it: self.recent_requested.emit(it.data(Qt.ItemDataRole.UserRole)))
        lay.addWidget(self.recent)

    def set_recent(self, files: list[str]) -> None:
        self.recent.clear()
        for f in files:
            it = QListWidgetItem(f"{Path(f).name}    ({Path(f).parent})")
            it.setData(Qt.ItemDataRole.UserRole, f)
            self.recent.addItem(it)
