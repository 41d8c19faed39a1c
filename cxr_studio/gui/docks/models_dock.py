"""Models dock: the shipped models (one click loads one), load / unload checkpoints (file dialog or
drag-and-drop), the device and its memory, the current model, and the prediction for the current
image, read against the model's own operating threshold when its checkpoint declares one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QListWidget,
                               QListWidgetItem, QProgressBar, QPushButton, QVBoxLayout, QWidget)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pt2")


def verdict(class_names: list[str], probabilities: Any, threshold: float | None) -> str:
    """One line reading a two-class prediction against the operating threshold of class 1, e.g.
    "tuberculosis 71 % — above the 0.52 operating point"; "" when there is no threshold to read against."""
    if threshold is None or len(probabilities) != 2:
        return ""
    p = float(probabilities[1])
    name = class_names[1] if len(class_names) > 1 else "class 1"
    from cxr_studio.core.models.shipped import predicted_class  # here: the window shows before torch loads

    side = "above" if predicted_class(probabilities, threshold) == 1 else "below"
    return f"{name} {p * 100:.0f} % — {side} the {threshold:.2f} operating point"


def _mb(v: Any) -> str:
    try:
        return f"{float(v) / 2**20:,.0f} MB"
    except (TypeError, ValueError):
        return "?"


def prediction_summary(session: Any) -> str:
    """One line for the status bar: the verdict against the operating point when the model has one,
    else the most probable class."""
    fwd, loaded = session.forward, session.current_model
    if fwd is None or loaded is None or not len(fwd.probabilities):
        return ""
    from cxr_studio.core.models.shipped import operating_threshold, predicted_class

    names = list(getattr(loaded, "class_names", []) or [])
    line = verdict(names, fwd.probabilities, operating_threshold(getattr(loaded, "provenance", None)))
    if line:
        return line
    i = predicted_class(fwd.probabilities, None)
    return f"{names[i] if i < len(names) else i} {float(fwd.probabilities[i]) * 100:.0f} %"


def prediction_order(probabilities: Any, multi_label: bool) -> list[tuple[int, float]]:
    """(class index, probability) pairs: in class order for a softmax over two classes, most probable
    first for multi-label models and for more than two classes."""
    pairs = [(i, float(p)) for i, p in enumerate(probabilities)]
    if multi_label or len(pairs) > 2:
        pairs.sort(key=lambda ip: -ip[1])
    return pairs


class ModelsDock(QDockWidget):
    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Models", parent)
        self.setObjectName("ModelsDock")
        self.session, self.controller = session, controller
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.addWidget(QLabel("Shipped models (double-click to load)"))
        self.shipped = QListWidget()
        self.shipped.setMaximumHeight(62)  # three rows; names elided (full label in the tooltip), so
        self.shipped.setTextElideMode(Qt.TextElideMode.ElideRight)  # no sideways scroll bar eats a row
        self.shipped.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.shipped.itemActivated.connect(self._load_shipped)
        lay.addWidget(self.shipped)
        self.fill_shipped()
        lay.addWidget(QLabel("Loaded models"))
        self.list = QListWidget()
        self.list.setToolTip("Loaded models; drop checkpoint files here")
        self.list.setMaximumHeight(62)  # three rows: the device line and the prediction stay in view
        self.list.currentItemChanged.connect(self._current_changed)
        lay.addWidget(self.list)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load…")
        self.load_button.clicked.connect(self.ask_load)
        self.unload_button = QPushButton("Unload")
        self.unload_button.clicked.connect(self.unload_current)
        row.addWidget(self.load_button)
        row.addWidget(self.unload_button)
        lay.addLayout(row)
        self.device = QLabel("Device: ?")
        self.device.setWordWrap(True)
        lay.addWidget(self.device)
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #ffb000; font-weight: bold")
        self.warning.hide()
        lay.addWidget(self.warning)
        lay.addWidget(QLabel("Prediction"))
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet("font-weight: bold")
        lay.addWidget(self.verdict)
        self.pred_box = QVBoxLayout()
        lay.addLayout(self.pred_box)
        self.bars: list[tuple[QLabel, QProgressBar]] = []
        self.setWidget(w)
        self.setAcceptDrops(True)
        session.events.models.connect(lambda _: self.refresh())
        session.events.current_model_id.connect(lambda _: self.refresh())
        session.events.forward.connect(lambda _: self.show_prediction())
        session.events.radiograph.connect(lambda _: self.show_prediction())
        self.refresh()

    # -- loading --------------------------------------------------------------------------------
    def fill_shipped(self) -> None:
        self.shipped.clear()
        if self.controller.manager is None:  # start-up: filled once torch is in (MainWindow.attach_engine)
            return
        from cxr_studio.core.models.shipped import shipped_models

        for m in shipped_models():
            item = QListWidgetItem(m.short_label())
            thr = f"; operating threshold {m.threshold:.2f}" if m.threshold is not None else ""
            item.setToolTip(f"{m.label()}\n{m.path}\nfor {m.kind}{thr}")
            item.setData(Qt.ItemDataRole.UserRole, str(m.path))
            self.shipped.addItem(item)

    def _load_shipped(self, item: QListWidgetItem) -> None:
        self.controller.load_checkpoint(item.data(Qt.ItemDataRole.UserRole))

    def ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "",
                                              "Models (*.pt *.pth *.ckpt *.pt2);;All files (*)")
        if path and self.ask_architecture(path):
            self.controller.load_checkpoint(path)

    def ask_architecture(self, path: str) -> bool:
        """A bare state dict needs an architecture name (``--arch`` on the command line): ask for it.
        False when the user cancels."""
        import os

        from cxr_studio.core.models.importers import architecture_names, needs_architecture

        if not needs_architecture(path):
            return True
        names = architecture_names()
        name, ok = QInputDialog.getItem(
            self, "Architecture", f"{Path(path).name} holds weights only. Which architecture are they for?\n"
            "(ours, or any torchvision classifier; timm:NAME with timm installed)", names,
            names.index("densenet121") if "densenet121" in names else 0, True)
        if not ok or not str(name).strip():
            return False
        self.controller.manager.open_options[os.path.abspath(path)] = {"arch": str(name).strip()}
        return True

    def unload_current(self) -> None:
        mid = self.session.current_model_id
        if mid is not None:
            self.controller.unload(mid)

    def dragEnterEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        if e.mimeData().hasUrls() and any(u.toLocalFile().lower().endswith(CHECKPOINT_SUFFIXES) for u in e.mimeData().urls()):
            e.acceptProposedAction()

    def dropEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        for u in e.mimeData().urls():
            p = u.toLocalFile()
            if p.lower().endswith(CHECKPOINT_SUFFIXES) and self.ask_architecture(p):
                self.controller.load_checkpoint(p)
        e.acceptProposedAction()

    # -- display --------------------------------------------------------------------------------
    def _current_changed(self, item: QListWidgetItem | None, _prev: Any) -> None:
        if item is not None:
            mid = item.data(Qt.ItemDataRole.UserRole)
            if mid != self.session.current_model_id:
                self.session.current_model_id = mid

    def refresh(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for mid, loaded in self.session.models.items():
            name = Path(str(getattr(loaded, "path", "") or mid)).name
            untrained = mid in self.controller.untrained
            item = QListWidgetItem(f"{mid}  ({getattr(loaded, 'arch', '?')})" + ("  [untrained]" if untrained else ""))
            item.setToolTip(f"{name}\nsha256 {getattr(loaded, 'sha256', '?')}")
            item.setData(Qt.ItemDataRole.UserRole, mid)
            self.list.addItem(item)
            if mid == self.session.current_model_id:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.unload_button.setEnabled(self.session.current_model_id is not None)
        untrained = self.session.current_model_id in self.controller.untrained
        self.warning.setText("Untrained model (random weights): the maps show no learned features." if untrained else "")
        self.warning.setVisible(untrained)
        self.show_device()
        self.show_prediction()

    def show_device(self) -> None:
        if self.controller.manager is None:  # start-up: torch is still being imported
            self.device.setText("Device: loading…")
            return
        try:
            from cxr_studio.core.runtime.engine import describe_device

            d = describe_device(self.controller.manager.device)
        except Exception as e:  # noqa: BLE001 - the label is informative only
            self.device.setText(f"Device: unknown ({e})")
            return
        mem = f"memory {_mb(d.get('memory_used'))} used of {_mb(d.get('memory_total'))}"
        self.device.setText(f"Device: {d.get('name', '?')} ({d.get('kind', '?')}), {mem}")

    def show_prediction(self) -> None:
        while self.pred_box.count():
            it = self.pred_box.takeAt(0)
            if it.widget():
                it.widget().deleteLater()
        fwd, loaded = self.session.forward, self.session.current_model
        if fwd is None or loaded is None:
            self.verdict.setText("")
            lab = QLabel("(no prediction yet)")
            self.pred_box.addWidget(lab)
            return
        from cxr_studio.core.models.shipped import operating_threshold

        names = list(getattr(loaded, "class_names", []) or [])
        self.verdict.setText(verdict(names, fwd.probabilities, operating_threshold(getattr(loaded, "provenance", None))))
        multi = bool(getattr(loaded, "multi_label", False))
        if multi:
            self.pred_box.addWidget(QLabel("Multi-label: each class has its own probability (sigmoid)"))
        for i, p in prediction_order(fwd.probabilities, multi):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(float(p) * 1000)))
            bar.setFormat(f"{names[i] if i < len(names) else i}: {float(p) * 100:.1f}%")
            self.pred_box.addWidget(bar)
