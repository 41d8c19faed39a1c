"""Heatmap controls: source (activation or any saliency method), class, colormap, threshold
(slider + spin box), opacity, per-channel vs per-layer scaling, lung and lesion outlines, the live
lesion scores of the map on screen (when the image has a lesion outline), the sanity check and the
region tools.

Every control writes the session; threshold / opacity / colormap only change the overlay's lookup
table or opacity (the main window listens), never a recomputation.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QPushButton, QSlider, QWidget)

from cxr_studio.core.inspect.lesion_scores import describe
from cxr_studio.core.inspect.method_names import HEATMAP_METHODS, LABELS, SLOW_METHODS

# every method of the one list; the strongest-channel ones are "Channel activation" with a ranking here
SOURCES = {k: LABELS[k] + (" (slow)" if k in SLOW_METHODS else "") for k in HEATMAP_METHODS
           if k not in ("channel-max", "channel-lungs")}
SLIDER_STEPS = 1000


class HeatmapDock(QDockWidget):
    region_requested = Signal(str)  # "rect" | "polygon"
    region_cleared = Signal()
    sanity_requested = Signal()

    def __init__(self, session: Any, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__("Heatmap", parent)
        self.setObjectName("HeatmapDock")
        self.session, self.controller = session, controller
        from cxr_studio.core.render import COLORMAPS

        w = QWidget()
        form = QFormLayout(w)
        self.source = QComboBox()
        # the longest method names would make the narrow dock scroll sideways: show what fits, all in the list
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(14)
        for k, label in SOURCES.items():
            self.source.addItem(label, k)
        self.source.currentIndexChanged.connect(lambda _: setattr(session, "method", self.source.currentData()))
        form.addRow("Source", self.source)
        self.klass = QComboBox()
        self.klass.currentIndexChanged.connect(self._class_picked)
        self.klass.setToolTip("The class whose score the class-based methods explain (Grad-CAM and its "
                              "variants, Score-CAM, occlusion, integrated gradients)")
        form.addRow("Class", self.klass)
        self.colormap = QComboBox()
        self.colormap.addItems(list(COLORMAPS))
        self.colormap.currentTextChanged.connect(lambda t: setattr(session, "colormap", t))
        form.addRow("Colormap", self.colormap)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_slider.valueChanged.connect(lambda v: setattr(session, "threshold", v / SLIDER_STEPS))
        self.threshold_spin.valueChanged.connect(lambda v: setattr(session, "threshold", float(v)))
        row = QHBoxLayout()
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_spin)
        form.addRow("Threshold", row)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, SLIDER_STEPS)
        self.opacity_slider.valueChanged.connect(lambda v: setattr(session, "opacity", v / SLIDER_STEPS))
        form.addRow("Opacity", self.opacity_slider)
        self.scale = QComboBox()
        self.scale.addItem("per channel", "channel")
        self.scale.addItem("per layer", "layer")
        self.scale.currentIndexChanged.connect(lambda _: setattr(session, "scale", self.scale.currentData()))
        form.addRow("Scaling", self.scale)
        self.outline = QCheckBox("Show lung outline")
        self.outline.toggled.connect(lambda on: setattr(session, "show_lung_outline", on))
        form.addRow(self.outline)
        self.lesion = QCheckBox("Show lesion outline")
        self.lesion.setToolTip("The radiologists' outline of the findings (magenta, dashed), when the image has one "
                               "(lesion_mask/<name>_lesion.png or the Shenzhen release's JSON beside it)")
        self.lesion.toggled.connect(lambda on: setattr(session, "show_lesion_outline", on))
        form.addRow(self.lesion)
        self.scores = QLabel()
        self.scores.setWordWrap(True)
        self.scores.setToolTip("The map on screen against the lesion outline: is its peak inside (8 px tolerance at "
                               "512), its share of mass inside, and IoU of what the threshold colours")
        form.addRow("Lesion", self.scores)
        self.sanity = QPushButton("Sanity check…")
        self.sanity.setToolTip("The same map on a copy of the model randomised down to the explained layer "
                               "(Adebayo et al. 2018): a faithful map changes")
        self.sanity.clicked.connect(self.sanity_requested.emit)
        form.addRow(self.sanity)
        regions = QHBoxLayout()  # one full-width row: beside a form label the three buttons would not fit
        regions.addWidget(QLabel("Region"))
        self.region_buttons: list[QPushButton] = []
        for label, kind in (("Rectangle", "rect"), ("Polygon", "polygon")):
            b = QPushButton(label)
            b.setToolTip(f"Draw a {label.lower()} region on the image; channels are ranked inside it")
            b.clicked.connect(lambda _=False, k=kind: self.region_requested.emit(k))
            regions.addWidget(b)
            self.region_buttons.append(b)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.region_cleared.emit)
        regions.addWidget(clear)
        self.region_buttons.append(clear)
        form.addRow(regions)
        self.setWidget(w)
        for name in ("method", "colormap", "threshold", "opacity", "scale", "show_lung_outline", "class_index",
                     "show_lesion_outline"):
            getattr(session.events, name).connect(lambda _v: self.sync())
        for name in ("lesion", "lesion_scores", "radiograph"):
            getattr(session.events, name).connect(lambda _v: self._show_scores())
        self._show_scores()
        session.events.radiograph.connect(lambda _v: self._enable_image_tools())
        self._enable_image_tools()
        session.events.current_model_id.connect(lambda _: self._fill_classes())
        self._fill_classes()
        self.sync()

    def _fill_classes(self) -> None:
        """The current model's class names; before any model is loaded the box says so and is off
        (a class of a model that is not there is nothing to choose)."""
        loaded = self.session.current_model
        self.klass.blockSignals(True)
        self.klass.clear()
        if loaded is None:
            self.klass.addItem("no model loaded")
        else:
            names = list(getattr(loaded, "class_names", None) or ["normal", "abnormal"])
            for i, n in enumerate(names):
                self.klass.addItem(f"{i}: {n}", i)
            self.klass.setCurrentIndex(min(self.session.class_index, len(names) - 1))
        self.klass.setEnabled(loaded is not None)
        self.klass.blockSignals(False)

    def _class_picked(self, _i: int) -> None:
        v = self.klass.currentData()
        if v is not None:
            self.session.class_index = int(v)

    def _enable_image_tools(self) -> None:
        """The sanity check and the region tools work on the radiograph on screen: off without one."""
        for b in (self.sanity, *self.region_buttons):
            b.setEnabled(self.session.radiograph is not None)

    def _show_scores(self) -> None:
        s = self.session
        self.lesion.setEnabled(s.lesion is not None)
        if s.lesion is None:
            self.scores.setText("" if s.radiograph is None else "no lesion outline beside this image")
        elif s.lesion_scores is None:
            self.scores.setText(f"outline from {s.lesion.source}; no heatmap yet")
        else:
            self.scores.setText(describe(s.lesion_scores, sep="\n"))  # one line each: the dock is narrow

    def sync(self) -> None:
        """Push the session's values into the widgets without feeding back."""
        s = self.session
        widgets = (self.source, self.colormap, self.threshold_slider, self.threshold_spin, self.opacity_slider,
                   self.scale, self.outline, self.klass, self.lesion)
        for wdg in widgets:
            wdg.blockSignals(True)
        self.source.setCurrentIndex(max(0, self.source.findData(s.method)))
        self.colormap.setCurrentText(s.colormap)
        self.threshold_slider.setValue(round(s.threshold * SLIDER_STEPS))
        self.threshold_spin.setValue(s.threshold)
        self.opacity_slider.setValue(round(s.opacity * SLIDER_STEPS))
        self.scale.setCurrentIndex(max(0, self.scale.findData(s.scale)))
        self.outline.setChecked(bool(s.show_lung_outline))
        self.lesion.setChecked(bool(s.show_lesion_outline))
        i = self.klass.findData(s.class_index)
        if i >= 0:
            self.klass.setCurrentIndex(i)
        for wdg in widgets:
            wdg.blockSignals(False)
