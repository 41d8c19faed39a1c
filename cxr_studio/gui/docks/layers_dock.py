"""Layer browser: the current model's layers with type and output shape; selecting one shows its
channels (the session's layer)."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QHeaderView, QTreeWidget, QTreeWidgetItem, QWidget


class LayersDock(QDockWidget):
    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Layers", parent)
        self.setObjectName("LayersDock")
        self.session, self.controller = session, controller
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Layer", "Type", "Output shape"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        # name and output shape always whole; the type takes what is left (elided in a narrow dock,
        # e.g. at 1366x768, with the full text in the row's tooltip)
        header = self.tree.header()
        header.setStretchLastSection(False)
        for c, mode in enumerate((QHeaderView.ResizeMode.ResizeToContents, QHeaderView.ResizeMode.Stretch,
                                  QHeaderView.ResizeMode.ResizeToContents)):
            header.setSectionResizeMode(c, mode)
        self.tree.currentItemChanged.connect(self._picked)
        self.setWidget(self.tree)
        self.items: dict[str, QTreeWidgetItem] = {}
        controller.layers_ready.connect(self._layers_ready)
        session.events.layer.connect(self.select)
        session.events.current_model_id.connect(lambda mid: self.show_layers(session.cache.layers.get(mid) or []))

    def _layers_ready(self, model_id: str, layers: list[Any]) -> None:
        if model_id == self.session.current_model_id:
            self.show_layers(layers)

    def show_layers(self, layers: list[Any]) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        self.items.clear()
        for info in layers:
            shape = "x".join(str(v) for v in info.shape) if info.shape else "?"
            item = QTreeWidgetItem([info.name, info.type, shape])
            item.setData(0, Qt.ItemDataRole.UserRole, info.name)
            for c in range(3):
                item.setToolTip(c, f"{info.name}: {info.type}, output {shape}")
            self.tree.addTopLevelItem(item)
            self.items[info.name] = item
        self.tree.blockSignals(False)
        self.select(self.session.layer)

    def select(self, name: str | None) -> None:
        item = self.items.get(name or "")
        self.tree.blockSignals(True)
        self.tree.setCurrentItem(item)
        if item is not None:
            self.tree.scrollToItem(item)
        self.tree.blockSignals(False)

    def _picked(self, item: QTreeWidgetItem | None, _prev: Any) -> None:
        if item is not None:
            self.session.select_layer(item.data(0, Qt.ItemDataRole.UserRole))
