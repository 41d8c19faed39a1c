"""Pipeline dock: a thumbnail of every preprocessing stage (click shows it centrally) and the
editable segmentation / CLAHE settings; applying them re-runs the pipeline in the worker."""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QDoubleSpinBox, QFormLayout, QLabel,
                               QListWidget, QListWidgetItem, QPushButton, QSpinBox, QVBoxLayout, QWidget)


def gray_pixmap(a: np.ndarray) -> QPixmap:
    """A uint8 (H, W) array as a QPixmap (copied, so the array may go)."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(img.copy())


class PipelineDock(QDockWidget):
    stage_clicked = Signal(str)

    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Pipeline", parent)
        self.setObjectName("PipelineDock")
        self.session, self.controller = session, controller
        from cxr_studio.core.imaging.spec import SEGMENTATION_METHODS

        w = QWidget()
        lay = QVBoxLayout(w)
        self.stages = QListWidget()
        self.stages.setViewMode(QListWidget.ViewMode.IconMode)
        self.stages.setIconSize(QSize(64, 64))
        self.stages.setGridSize(QSize(78, 86))
        self.stages.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.stages.setMovement(QListWidget.Movement.Static)
        self.stages.setMinimumHeight(100)
        self.stages.itemClicked.connect(lambda it: self.stage_clicked.emit(it.data(Qt.ItemDataRole.UserRole)))
        lay.addWidget(self.stages, 1)
        form = QFormLayout()
        self.segmentation = QComboBox()
        self.segmentation.addItems(list(SEGMENTATION_METHODS))
        self.clahe = QCheckBox("CLAHE")
        self.clip = QDoubleSpinBox()
        self.clip.setRange(0.1, 100.0)
        self.clip.setSingleStep(0.5)
        self.tiles = QSpinBox()
        self.tiles.setRange(1, 64)
        form.addRow("Lung segmentation", self.segmentation)
        form.addRow(self.clahe)
        form.addRow("CLAHE clip limit", self.clip)
        form.addRow("CLAHE tiles", self.tiles)
        lay.addLayout(form)
        self.apply = QPushButton("Re-run pipeline")
        self.apply.setToolTip("Preprocess again with these settings (runs in the background)")
        self.apply.clicked.connect(self.apply_settings)
        lay.addWidget(self.apply)
        self.info = QLabel("No image")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.setWidget(w)
        self.show_spec(session.effective_spec())
        controller.pipeline_ready.connect(self.show_result)
        session.events.current_model_id.connect(lambda _: self.show_spec(session.effective_spec()))

    def show_spec(self, spec: Any) -> None:
        for wdg in (self.segmentation, self.clahe, self.clip, self.tiles):
            wdg.blockSignals(True)
        self.segmentation.setCurrentText(spec.segmentation)
        self.clahe.setChecked(bool(spec.clahe))
        self.clip.setValue(float(spec.clahe_clip))
        self.tiles.setValue(int(spec.clahe_tiles))
        for wdg in (self.segmentation, self.clahe, self.clip, self.tiles):
            wdg.blockSignals(False)

    def apply_settings(self) -> None:
        """Push the edited settings into the session (the controller re-runs the pipeline)."""
        spec = self.session.effective_spec().replace(
            segmentation=self.segmentation.currentText(), clahe=self.clahe.isChecked(),
            clahe_clip=float(self.clip.value()), clahe_tiles=int(self.tiles.value()))
        spec.validate()
        self.session.spec = spec

    def show_result(self, res: Any) -> None:
        self.stages.clear()
        for name, thumb in res.thumbnails.items():
            item = QListWidgetItem(QIcon(gray_pixmap(thumb)), name)
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.stages.addItem(item)
        p = res.preprocessed
        self.show_spec(p.spec)
        total = sum(p.timings.values())
        h, w = p.original.shape
        seg = getattr(res, "lung_method", p.segmentation_method)
        if p.spec.segmentation == "none" and seg != "none":
            seg += " (outline and ranking only; the model input is not segmented)"
        text = (f"{w}x{h} px; segmentation: {seg}; input {p.spec.input_size}px; "
                f"{total * 1000:.0f} ms")
        if p.warnings:
            text += "\n" + "\n".join(p.warnings)
        self.info.setText(text)
