"""Channel grid: every channel of the layer as a small map, virtualised (QListView + model, icon
mode; thumbnails rendered in the worker as one RGBA stack, QImages made lazily) so 512 channels stay
smooth. Sortable by the core's ranking methods; "Strongest" selects the top channel; arrows move
between channels, Page Up / Page Down between layers."""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (QComboBox, QDockWidget, QHBoxLayout, QLabel, QListView, QPushButton,
                               QVBoxLayout, QWidget)

RANK_LABELS = {"max": "max", "mean": "mean", "lungs": "mean in lungs", "region": "mean in region"}


class ChannelModel(QAbstractListModel):
    """Channels of one layer in display order; DecorationRole gives the thumbnail QImage."""

    def __init__(self) -> None:
        super().__init__()
        self.thumbs: np.ndarray | None = None  # (C, t, t, 4) uint8
        self.order: list[int] = []
        self.scores: dict[int, float] = {}
        self._images: dict[int, QImage] = {}

    def set_thumbnails(self, thumbs: np.ndarray | None) -> None:
        self.beginResetModel()
        self.thumbs = thumbs
        self._images.clear()
        n = 0 if thumbs is None else thumbs.shape[0]
        if len(self.order) != n or (self.order and max(self.order) >= n):
            self.order = list(range(n))
            self.scores = {}
        self.endResetModel()

    def set_ranking(self, ranking: list[tuple[int, float]]) -> None:
        n = 0 if self.thumbs is None else self.thumbs.shape[0]
        if n and len(ranking) != n:
            return
        self.beginResetModel()
        self.order = [c for c, _ in ranking]
        self.scores = dict(ranking)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.order)

    def channel_at(self, row: int) -> int:
        return self.order[row]

    def row_of(self, channel: int) -> int:
        try:
            return self.order.index(channel)
        except ValueError:
            return -1

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.order):
            return None
        ch = self.order[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return str(ch)
        if role == Qt.ItemDataRole.DecorationRole and self.thumbs is not None:
            img = self._images.get(ch)
            if img is None:
                a = np.ascontiguousarray(self.thumbs[ch])
                img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_RGBA8888).copy()
                self._images[ch] = img
            return img
        if role == Qt.ItemDataRole.ToolTipRole:
            s = self.scores.get(ch)
            return f"channel {ch}" + (f", score {s:.4g}" if s is not None else "")
        if role == Qt.ItemDataRole.UserRole:
            return ch
        return None


class ChannelView(QListView):
    """The grid; Page Up / Page Down move between layers."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def keyPressEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        if e.key() in (Qt.Key.Key_PageUp, Qt.Key.Key_PageDown):
            self.session.next_layer(-1 if e.key() == Qt.Key.Key_PageUp else 1)
            e.accept()
            return
        super().keyPressEvent(e)


class ChannelsDock(QDockWidget):
    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Channels", parent)
        self.setObjectName("ChannelsDock")
        self.session, self.controller = session, controller
        w = QWidget()
        lay = QVBoxLayout(w)
        row = QHBoxLayout()
        row.addWidget(QLabel("Sort by"))
        self.sort = QComboBox()
        for k, label in RANK_LABELS.items():
            self.sort.addItem(label, k)
        self.sort.currentIndexChanged.connect(lambda _: setattr(session, "ranking", self.sort.currentData()))
        row.addWidget(self.sort, 1)
        self.strongest = QPushButton("Strongest")
        self.strongest.setToolTip("Select the top channel by the chosen ranking")
        self.strongest.clicked.connect(controller.strongest)
        row.addWidget(self.strongest)
        lay.addLayout(row)
        self.model = ChannelModel()
        self.view = ChannelView(session)
        self.view.setModel(self.model)
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setIconSize(QSize(56, 56))
        self.view.setGridSize(QSize(66, 78))
        self.view.setUniformItemSizes(True)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(64)
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        self.view.setMinimumHeight(160)
        lay.addWidget(self.view, 1)
        self.info = QLabel("")
        lay.addWidget(self.info)
        self.setWidget(w)
        controller.thumbnails_ready.connect(self._thumbs)
        controller.ranking_ready.connect(self._ranking)
        session.events.channel.connect(self.select)
        session.events.ranking.connect(self._ranking_method)
        self._ranking_method(session.ranking)

    def _ranking_method(self, method: str) -> None:
        i = self.sort.findData(method)
        self.sort.blockSignals(True)
        self.sort.setCurrentIndex(max(i, 0))
        self.sort.blockSignals(False)

    def _thumbs(self, layer: str, thumbs: np.ndarray | None) -> None:
        self.model.set_thumbnails(thumbs)
        n = 0 if thumbs is None else thumbs.shape[0]
        self.info.setText(f"{layer}: {n} channels" if thumbs is not None else f"{layer}: no spatial channels")
        self.select(self.session.channel)

    def _ranking(self, layer: str, ranking: list[tuple[int, float]]) -> None:
        self.model.set_ranking(ranking)
        self.select(self.session.channel)

    def select(self, channel: int) -> None:
        row = self.model.row_of(int(channel))
        sm = self.view.selectionModel()
        sm.blockSignals(True)
        if row >= 0:
            idx = self.model.index(row)
            self.view.setCurrentIndex(idx)
            self.view.scrollTo(idx)
        sm.blockSignals(False)
        self.view.viewport().update()

    def _current_changed(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if cur.isValid():
            ch = self.model.channel_at(cur.row())
            if ch != self.session.channel:
                self.session.channel = ch
