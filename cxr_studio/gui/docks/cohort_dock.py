"""Cohort view: "where does my model look on the whole test set, and where is it wrong?"

Open a folder or data root; every image is scored with the current model in the worker (progress,
cancel); a sortable, filterable table (file, label, probability, prediction at the model's operating
threshold, correct), the ROC curve with its AUC and the confusion matrix. Clicking a row opens that
image with its heatmap; "false negatives" and the other filters are one click; the table exports as
CSV."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDockWidget, QFileDialog, QHBoxLayout, QLabel,
                               QProgressBar, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from ..cohort import FILTERS, CohortResult, matches, score_cohort

HEADERS = ("file", "label", "probability", "prediction", "correct", "lesion hit")


class _Num(QTableWidgetItem):
    """A cell that sorts by its number (blank cells last)."""

    def __init__(self, value: float | None, text: str) -> None:
        super().__init__(text)
        self.value = float("inf") if value is None or np.isnan(value) else float(value)

    def __lt__(self, other: Any) -> bool:
        return self.value < getattr(other, "value", float("inf"))


class CohortDock(QDockWidget):
    open_requested = Signal(str)  # an image path to open with its heatmap
    scored = Signal(object)  # CohortResult

    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Cohort", parent)
        self.setObjectName("CohortDock")
        self.session, self.controller = session, controller
        self.result: CohortResult | None = None
        self.job: int | None = None
        w = QWidget()
        lay = QVBoxLayout(w)
        bar = QHBoxLayout()
        self.open_button = QPushButton("Open folder…")
        self.open_button.setToolTip("A folder of radiographs or a data root (NLM, class folders)")
        self.open_button.clicked.connect(self.ask_open)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.filter = QComboBox()
        self.filter.addItems(list(FILTERS))
        self.filter.currentTextChanged.connect(lambda _t: self.apply_filter())
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self.ask_export)
        for wdg in (self.open_button, self.cancel_button, QLabel("Show"), self.filter, self.export_button):
            bar.addWidget(wdg)
        bar.addStretch(1)
        lay.addLayout(bar)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        lay.addWidget(self.progress)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellClicked.connect(self._row_clicked)
        split.addWidget(self.table)
        side = QWidget()
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 0, 0)
        self.roc = pg.PlotWidget()
        self.roc.setMinimumSize(160, 160)
        self.roc.setLabel("bottom", "1 - specificity")
        self.roc.setLabel("left", "sensitivity")
        self.roc.setXRange(0, 1)
        self.roc.setYRange(0, 1)
        side_lay.addWidget(self.roc, 1)
        self.matrix = QLabel("")
        self.matrix.setTextFormat(Qt.TextFormat.RichText)
        side_lay.addWidget(self.matrix)
        side.setMaximumWidth(460)  # the table gets the rest of a wide dock
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay.addWidget(split, 1)
        self.info = QLabel("Open a folder or data root to score every image with the current model.")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.setWidget(w)
        controller.bridge.progress.connect(self._progressed)

    # -- scoring -----------------------------------------------------------------------------------
    def ask_open(self) -> None:
        root = QFileDialog.getExistingDirectory(self, "Folder or data root to score", str(Path.home()))
        if root:
            self.score(root)

    def threshold(self) -> float:
        from cxr_studio.core.models.shipped import operating_threshold

        t = operating_threshold(getattr(self.session.current_model, "provenance", None))
        return 0.5 if t is None else float(t)

    def score(self, root: str, on_done: Any = None) -> None:
        """Score every image of ``root`` with the current model in the worker."""
        loaded = self.session.current_model
        if loaded is None:
            self.controller.error.emit("Load a model first: the cohort is scored with the current model.")
            return
        self.cancel_button.setEnabled(True)
        self.open_button.setEnabled(False)
        self.progress.setValue(0)
        self.info.setText(f"Scoring {root} with {self.session.current_model_id}…")

        def done(res: CohortResult) -> None:
            self._finished()
            self.show_result(res)
            if on_done:
                on_done(res)

        def failed(msg: str) -> None:
            self._finished()
            self.info.setText("Scoring cancelled." if msg == "cancelled" else f"Scoring failed: {msg}")
            if msg != "cancelled":
                self.controller.error.emit(msg)
            if on_done:
                on_done(None)

        self.job = self.controller.bridge.submit("scoring cohort", score_cohort, root, loaded, self.threshold(),
                                                 cancellable=True, on_result=done, on_error=failed)

    def cancel(self) -> None:
        if self.job is not None:
            self.controller.bridge.cancel(self.job)
            self.info.setText("Cancelling after the current image…")

    def _finished(self) -> None:
        self.job = None
        self.cancel_button.setEnabled(False)
        self.open_button.setEnabled(True)

    def _progressed(self, label: str, fraction: float, message: str) -> None:
        if label == "scoring cohort":
            self.progress.setValue(int(round(fraction * 1000)))
            if message:
                self.info.setText(message)

    # -- showing -----------------------------------------------------------------------------------
    def show_result(self, res: CohortResult) -> None:
        self.result = res
        t = res.threshold
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(res.rows))
        for i, r in enumerate(res.rows):
            pred = r.prediction(t)
            name = QTableWidgetItem(Path(r.path).name)
            name.setData(Qt.ItemDataRole.UserRole, i)
            name.setToolTip(r.error or r.path)
            correct = None if pred is None or r.label is None else int(pred == r.label)
            cells = [name, _Num(r.label, "" if r.label is None else str(r.label)),
                     _Num(r.probability, "failed" if np.isnan(r.probability) else f"{r.probability:.3f}"),
                     _Num(pred, "" if pred is None else str(pred)),
                     _Num(correct, {None: "", 1: "yes", 0: "NO"}[correct]),
                     _Num(None if r.lesion_hit is None else int(r.lesion_hit),
                          "" if r.lesion_hit is None else ("hit" if r.lesion_hit else "miss"))]
            for c, item in enumerate(cells):
                self.table.setItem(i, c, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(0, Qt.SortOrder.AscendingOrder)  # by file name until the user picks a column
        self.table.resizeColumnsToContents()
        self.table.setColumnHidden(5, res.pointing()[1] == 0)  # "lesion hit": only where outlines exist
        self.apply_filter()
        self._plot(res)
        self.export_button.setEnabled(True)
        self.scored.emit(res)

    def _plot(self, res: CohortResult) -> None:
        self.roc.clear()
        self.roc.plot([0, 1], [0, 1], pen=pg.mkPen((120, 120, 120), style=Qt.PenStyle.DashLine))
        auc = res.auc()
        y, _p = res.labelled()
        if len(y):
            fpr, tpr = res.roc()
            self.roc.plot(fpr, tpr, pen=pg.mkPen((255, 170, 0), width=2))
        m = res.confusion()
        self.matrix.setText(
            "<table cellpadding=3><tr><td></td><td><b>called abnormal</b></td><td><b>called normal</b></td></tr>"
            f"<tr><td><b>abnormal</b></td><td>{m['true positive']}</td><td>{m['false negative']}</td></tr>"
            f"<tr><td><b>normal</b></td><td>{m['false positive']}</td><td>{m['true negative']}</td></tr></table>")
        failed = sum(np.isnan(r.probability) for r in res.rows)
        auc_text = "AUC undefined (one class)" if np.isnan(auc) else f"AUC {auc:.3f}"
        self.info.setText(f"{len(res.rows)} image(s){' (cancelled: partial)' if res.cancelled else ''}; "
                          f"{auc_text} over {len(y)} labelled; threshold {res.threshold:.2f}"
                          + (f"; {failed} could not be scored" if failed else "") + self._seen_text(res)
                          + self._pointing_text(res))

    @staticmethod
    def _seen_text(res: CohortResult) -> str:
        """Say when the model has seen some of these images: an AUC over its own training set flatters it."""
        seen = len(res.seen())
        if not seen:
            return ""
        rest = res.held_out()
        auc = rest.auc()
        n = len(rest.labelled()[0])
        other = f"AUC {auc:.3f} over the other {n}" if not np.isnan(auc) else "no AUC over the others"
        return f"; {seen} are the model's own training or validation images ({other})"

    @staticmethod
    def _pointing_text(res: CohortResult) -> str:
        hits, n = res.pointing()
        return f"; lesion pointing {hits}/{n} (strongest channel's peak in the lesion)" if n else ""

    def apply_filter(self) -> None:
        res, name = self.result, self.filter.currentText()
        if res is None:
            return
        for row in range(self.table.rowCount()):
            i = self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)
            self.table.setRowHidden(row, not matches(res.rows[i], name, res.threshold))

    def visible_rows(self) -> list[int]:
        """Indices (into ``result.rows``) of the rows shown, in table order."""
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.table.rowCount())
                if not self.table.isRowHidden(r)]

    def _row_clicked(self, row: int, _col: int) -> None:
        if self.result is not None:
            i = self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)
            self.open_requested.emit(self.result.rows[i].path)

    # -- export ------------------------------------------------------------------------------------
    def ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export cohort table", "cohort.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str | Path) -> Path:
        from cxr_studio.core.atomic import write_text_atomic

        if self.result is None:
            raise ValueError("Nothing scored yet.")
        return write_text_atomic(path, self.result.to_csv())

    def score_when_ready(self, root: str, on_done: Any = None) -> None:
        """Score ``root`` now, or as soon as a model is loaded (the command line's --cohort)."""
        if self.session.current_model is not None:
            self.score(root, on_done)
            return

        def loaded() -> None:
            if self.session.current_model is not None:
                self.controller.models_changed.disconnect(loaded)
                self.score(root, on_done)

        self.controller.models_changed.connect(loaded)
