"""Filter mosaic dock: conv1 weight tiles, and activation maximisation for a chosen layer channel
or class neuron, run in the background with a progress bar and a cancel button."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (QComboBox, QDockWidget, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from .. import jobs


class MosaicDock(QDockWidget):
    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Filters", parent)
        self.setObjectName("MosaicDock")
        self.session, self.controller = session, controller
        w = QWidget()
        lay = QVBoxLayout(w)
        self.graphics = pg.GraphicsLayoutWidget()
        self.conv1_vb = self.graphics.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.am_vb = self.graphics.addViewBox(row=0, col=1, lockAspect=True, invertY=True, enableMenu=False)
        self.conv1_item = pg.ImageItem(axisOrder="row-major")
        self.am_item = pg.ImageItem(axisOrder="row-major")
        self.conv1_vb.addItem(self.conv1_item)
        self.am_vb.addItem(self.am_item)
        self.graphics.setMinimumHeight(180)
        lay.addWidget(self.graphics, 1)
        self.caption = QLabel("conv1 filters (left) · activation maximisation (right)")
        lay.addWidget(self.caption)
        row = QHBoxLayout()
        self.layer = QComboBox()
        self.layer.setToolTip("Layer whose channel (or class neuron) to visualise")
        self.unit = QSpinBox()
        self.unit.setRange(0, 4095)
        self.unit.setToolTip("Channel, or class index for the last fc layer")
        self.run_button = QPushButton("Visualise")
        self.run_button.clicked.connect(self.run_am)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_am)
        for wdg in (self.layer, self.unit, self.run_button, self.cancel_button):
            row.addWidget(wdg)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        lay.addWidget(self.progress)
        self.setWidget(w)
        self.conv1: np.ndarray | None = None
        self.am: np.ndarray | None = None
        self._job: int | None = None
        controller.bridge.progress.connect(self._progress)
        session.events.current_model_id.connect(lambda _: self.refresh())
        session.events.channel.connect(lambda ch: self.unit.setValue(int(ch)))
        session.events.layer.connect(self.follow_layer)
        self.refresh()

    def refresh(self) -> None:
        """conv1 tiles of the current model (worker) and its layer list."""
        loaded = self.session.current_model
        self.layer.clear()
        self.conv1_item.clear()
        if loaded is None:
            return
        from cxr_studio.core.models.layers import conv_layers

        names = list(conv_layers(loaded.model))
        fc = [n for n in getattr(loaded.model, "layer_names", {}) if n.startswith("fc")]
        self.layer.addItems(names + fc[-1:])
        self.follow_layer(self.session.layer)
        self.controller.bridge.submit("conv1 filters", jobs.conv1_tiles, loaded, key="conv1",
                                      on_result=self._conv1_done, on_error=self.controller.error.emit)

    def follow_layer(self, layer: str | None) -> None:
        """Preselect the conv layer behind the session's layer (relu5 -> conv5)."""
        if not layer or self._job is not None:
            return
        for name in (layer, layer.replace("relu", "conv")):
            i = self.layer.findText(name)
            if i >= 0:
                self.layer.setCurrentIndex(i)
                return

    def _conv1_done(self, tiles: np.ndarray) -> None:
        self.conv1 = np.asarray(tiles)
        self.conv1_item.setImage((np.clip(self.conv1, 0, 1) * 255).astype(np.uint8), levels=(0, 255))
        self.conv1_vb.autoRange(padding=0.01)

    def run_am(self) -> None:
        loaded = self.session.current_model
        layer = self.layer.currentText()
        if loaded is None or not layer:
            self.controller.error.emit("Load a model first: activation maximisation needs one.")
            return
        is_fc = layer.startswith("fc")
        unit = int(self.unit.value())
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._job = self.controller.bridge.submit(
            "activation maximisation", jobs.activation_maximisation, loaded, layer,
            None if is_fc else unit, unit if is_fc else None, key="am", cancellable=True,
            on_result=self._am_done, on_error=self._am_failed)
        self.caption.setText(f"activation maximisation of {layer} {'class' if is_fc else 'channel'} {unit}…")

    def cancel_am(self) -> None:
        if self._job is not None:
            self.controller.bridge.cancel(self._job)

    def _progress(self, label: str, fraction: float, message: str) -> None:
        if label == "activation maximisation":
            self.progress.setValue(int(round(fraction * 1000)))
            if message:
                self.progress.setFormat(f"{message} %p%")

    def _am_finished(self) -> None:
        self._job = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _am_failed(self, message: str) -> None:
        self._am_finished()
        self.progress.setValue(0)
        if message == "cancelled":
            self.caption.setText("activation maximisation cancelled")
        else:
            self.caption.setText("activation maximisation failed")
            self.controller.error.emit(message)

    def _am_done(self, img: np.ndarray) -> None:
        self._am_finished()
        self.am = np.asarray(img, dtype=np.float32)
        self.am_item.setImage((np.clip(self.am, 0, 1) * 255).astype(np.uint8), levels=(0, 255))
        self.am_vb.autoRange(padding=0.01)
        self.progress.setValue(1000)
        self.caption.setText(self.caption.text().replace("…", "").replace("activation maximisation of",
                                                                            "conv1 filters (left) · activation maximisation of"))
