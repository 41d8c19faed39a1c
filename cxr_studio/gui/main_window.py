"""The main window: central image view, docks, menus, status bar, persistence, drag-and-drop.

Every dock receives the session and the controller; nothing is global. Torch and segmentation work
goes to the worker through the controller; this window only draws what comes back.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QStackedWidget, QWidget

from cxr_studio.core.imaging.formats import SUPPORTED_SUFFIXES

from . import jobs, layout, menus, status_bar
from .bridge import WorkerBridge
from .controller import Controller
from .docks.channels_dock import ChannelsDock
from .docks.cohort_dock import CohortDock
from .docks.compare_dock import CompareDock
from .docks.heatmap_dock import HeatmapDock
from .docks.layers_dock import LayersDock
from .docks.models_dock import CHECKPOINT_SUFFIXES, ModelsDock
from .docks.mosaic_dock import MosaicDock
from .docks.pipeline_dock import PipelineDock
from .export_actions import ExportActions
from .image_view import ImageView
from .lesion_overlay import LesionOverlay
from .sanity_dialog import run_sanity_check
from .settings import Settings
from .theme import apply_theme
from .welcome import WelcomePage

log = logging.getLogger(__name__)
IMAGE_FILTER = f"Radiographs ({' '.join('*' + s for s in SUPPORTED_SUFFIXES)});;All files (*)"  # the one suffix list


class MainWindow(ExportActions, QMainWindow):
    heatmap_drawn = Signal()
    closed = Signal()

    def __init__(self, session: Any, worker: Any, manager: Any, settings: Settings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("CXR Studio")
        self.setObjectName("MainWindow")
        self.setAcceptDrops(True)
        self.session, self.manager = session, manager
        self.settings = settings or Settings()
        self.bridge = WorkerBridge(worker, self)
        self.controller = Controller(session, self.bridge, manager, self)
        self.last_error: str | None = None
        self._error_box: QMessageBox | None = None
        self.image_path: Path | None = None
        self._closed = False

        self.view = ImageView()
        self.auto_default_model = True  # a radiograph opened with no model loads the shipped TB model
        self._default_model_requested = False
        self.welcome = WelcomePage(defer_models=manager is None)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.view)
        self.setCentralWidget(self.stack)
        self._build_docks()
        self._build_status()
        self._build_menus()
        self._connect()
        self.welcome.set_recent(self.settings.recent_files())
        self.restore_settings()
        self._apply_lut()
        self.view.set_opacity(session.opacity)

    # -- construction ----------------------------------------------------------------------------
    def _build_docks(self) -> None:
        s, c = self.session, self.controller
        self.pipeline_dock = PipelineDock(s, c, self)
        self.models_dock = ModelsDock(s, c, self)
        self.layers_dock = LayersDock(s, c, self)
        self.channels_dock = ChannelsDock(s, c, self)
        self.heatmap_dock = HeatmapDock(s, c, self)
        self.mosaic_dock = MosaicDock(s, c, self)
        self.compare_dock = CompareDock(s, c, self)
        self.cohort_dock = CohortDock(s, c, self)
        self.cohort_dock.open_requested.connect(self.open_image)
        self.docks = [self.pipeline_dock, self.models_dock, self.layers_dock, self.channels_dock,
                      self.heatmap_dock, self.mosaic_dock, self.compare_dock, self.cohort_dock]
        for d in self.docks:
            if d not in (self.compare_dock, self.cohort_dock):  # these lay out their own large panes
                layout.scrollable(d)
        layout.arrange(self, layout.available(self).height())

    def _build_status(self) -> None:
        status_bar.build(self)

    def _build_menus(self) -> None:
        menus.build(self)

    def _connect(self) -> None:
        s, c, b = self.session, self.controller, self.bridge
        self.welcome.demo_requested.connect(lambda: self.open_demo())
        self.welcome.open_requested.connect(self.ask_open)
        self.welcome.recent_requested.connect(self.open_image)
        self.view.cursor_info.connect(self.cursor_label.setText)
        self.view.window_changed.connect(self.wl_label.setText)
        self.view.region_changed.connect(self._region_changed)
        self.pipeline_dock.stage_clicked.connect(self._show_stage)
        self.heatmap_dock.region_requested.connect(self.view.start_region)
        self.heatmap_dock.region_cleared.connect(self.view.clear_region)
        self.heatmap_dock.sanity_requested.connect(lambda: run_sanity_check(self))
        self.lesions = LesionOverlay(s, c, b, self.view, self)
        s.events.show_lesion_outline.connect(lambda on: self.lesion_action.setChecked(bool(on)))
        c.heatmap_ready.connect(self._show_heatmap)
        c.error.connect(self.show_error)
        c.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        c.pipeline_ready.connect(self._pipeline_ready)
        b.failed.connect(lambda label, msg: self.show_error(f"{label} failed: {msg}"))
        b.busy_changed.connect(lambda t: self.busy_label.setText(f"running: {t}" if t else "ready"))
        b.busy_changed.connect(lambda _t: self.cancel_button.setVisible(bool(b.cancellable())))
        b.step_finished.connect(lambda label, sec: self.step_label.setText(f"last: {label} {sec * 1000:.0f} ms"))
        s.events.threshold.connect(lambda _v: self._apply_lut())
        s.events.colormap.connect(lambda _v: self._apply_lut())
        s.events.opacity.connect(lambda v: self.view.set_opacity(v))
        s.events.show_lung_outline.connect(self._outline_changed)
        s.events.region.connect(lambda r: self.view.clear_region(emit=False) if r is None else None)
        s.events.current_model_id.connect(lambda mid: self.view.set_heatmap(None) if mid is None else None)

    # -- session -> view ----------------------------------------------------------------------------
    def _apply_lut(self) -> None:
        from cxr_studio.core.render import colormap_lut, threshold_lut

        s = self.session
        self.view.set_lut(threshold_lut(colormap_lut(s.colormap), s.threshold), s.threshold)

    def _outline_changed(self, on: bool) -> None:
        self.outline_action.setChecked(bool(on))
        self.view.show_outline(on)

    def _pipeline_ready(self, res: Any) -> None:
        p = res.preprocessed
        if self.view.pixels is not p.original:
            self.view.set_heatmap(None)
            self.view.set_image(p.original, meta=getattr(self.session.radiograph, "meta", None))
        self.view.set_lung_mask(p.lung_mask)
        self.view.show_outline(self.session.show_lung_outline)
        self.stack.setCurrentWidget(self.view)

    def _show_heatmap(self, hv: Any) -> None:
        if self.view.pixels is None:
            return
        self.view.set_heatmap(hv.map_input, hv.crop_box, hv.value_range, getattr(hv, "valid", None))
        what = f"channel {hv.channel}" if hv.channel is not None else hv.method
        self.view.colorbar.getPlotItem().getAxis("right").setLabel(
            "activation" if hv.method == "activation" else f"{hv.method} (relative)")
        self.statusBar().showMessage(f"{hv.model_id} · {hv.layer} · {what}", 5000)
        self.heatmap_drawn.emit()

    def _show_stage(self, name: str) -> None:
        p = self.session.preprocessed
        if p is not None:
            self.view.show_stage(name, p.stages()[name])

    def _region_changed(self, region: Any) -> None:
        from cxr_studio.core.inspect.activations import Region

        try:
            self.session.region = None if region is None else Region(region[0], region[1])
            if region is not None and self.session.ranking != "region":
                self.session.ranking = "region"
        except ValueError as e:
            self.show_error(str(e))

    def _step_channel(self, step: int) -> None:
        try:
            self.session.next_channel(step)
        except ValueError as e:
            self.statusBar().showMessage(str(e), 5000)

    def _step_layer(self, step: int) -> None:
        self.session.next_layer(step)

    # -- opening ------------------------------------------------------------------------------------
    def ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open radiograph", self.settings.last_dir, IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, path: str | Path) -> None:
        p = Path(path)
        self.image_path = p
        self.settings.last_dir = str(p.parent)
        self.settings.add_recent_file(p)
        self._fill_recent()
        self.setWindowTitle(f"CXR Studio — {p.name}")
        self.lesions.expect(None)
        self.controller.open_image(str(p))
        if self.auto_default_model:
            self.load_default_model()

    def load_default_model(self) -> None:
        """A real radiograph opened with no model: load the shipped model for radiographs, once."""
        from cxr_studio.core.models.shipped import default_model_for_radiographs, no_default_message

        if self.session.models or self._default_model_requested:
            return
        self._default_model_requested = True
        path = default_model_for_radiographs()
        if path is None:
            self.statusBar().showMessage(no_default_message(), 15000)
            return
        self.controller.load_checkpoint(str(path))
        self.statusBar().showMessage(f"Opened with the shipped model {path.name}", 8000)

    def open_radiograph(self, radiograph: Any, lung_mask: np.ndarray | None = None, title: str = "",
                        lesion_mask: np.ndarray | None = None) -> None:
        self.image_path = None
        self.lesions.expect(lesion_mask)
        self.setWindowTitle(f"CXR Studio — {title or 'image'}")
        self.controller.open_image(radiograph, lung_mask)

    def open_demo(self, seed: int = 3, size: int = 1024) -> None:
        """The demo: an abnormal synthetic phantom and the shipped demo model (an untrained narrow
        cxrnet, clearly marked, until the trained one is installed)."""
        from cxr_studio.core.phantoms.phantom import make_phantom
        from cxr_studio.core.resources import DEMO_MODEL, find_resource

        ph = make_phantom(seed, size=size, abnormal=True)
        saved = self.settings.view_settings()
        if "ranking" not in saved:
            self.session.ranking = "lungs"  # strongest inside the lungs, where the lesions are
        self.open_radiograph(ph.radiograph(), ph.lung_mask, f"demo phantom (seed {seed})", ph.lesion_mask)
        if self.session.models:
            return
        path = find_resource(DEMO_MODEL)
        if path is not None:
            self.controller.load_checkpoint(str(path))
        else:
            self.statusBar().showMessage("No trained demo model is installed: using an UNTRAINED cxrnet.", 15000)
            self.bridge.submit("building demo model", jobs.untrained_demo_checkpoint,
                               on_result=lambda p: self.controller.load_checkpoint(str(p), untrained=True),
                               on_error=self.show_error)

    def step_image(self, step: int) -> None:
        if self.image_path is None:
            return
        from cxr_studio.core.imaging.io import list_images

        files = list_images(self.image_path.parent)
        if self.image_path in files:
            self.open_image(files[(files.index(self.image_path) + step) % len(files)])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for f in self.settings.recent_files():
            a = self.recent_menu.addAction(f)
            a.triggered.connect(lambda _=False, f=f: self.open_image(f))
        self.welcome.set_recent(self.settings.recent_files())

    def dragEnterEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        paths = [u.toLocalFile() for u in e.mimeData().urls()]
        checkpoints = [p for p in paths if p.lower().endswith(CHECKPOINT_SUFFIXES)]
        auto = self.auto_default_model
        self.auto_default_model = auto and not checkpoints  # a dropped model replaces the shipped default
        try:
            for p in checkpoints:
                if self.models_dock.ask_architecture(p):
                    self.controller.load_checkpoint(p)
            for p in paths:
                if p and p not in checkpoints:
                    self.open_image(p)
        finally:
            self.auto_default_model = auto
        e.acceptProposedAction()

    # -- errors, about, theme, persistence -------------------------------------------------------
    def show_error(self, message: str) -> None:
        """One clear message; non-blocking, the app stays usable."""
        if message == "cancelled":
            return
        self.last_error = message
        self.statusBar().showMessage(message, 15000)
        if self._error_box is not None:
            self._error_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "CXR Studio", message, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self._error_box = box

    def show_about(self) -> None:
        from .about import show_about

        show_about(self, getattr(self.manager, "device", None))

    def _toggle_theme(self, light: bool) -> None:
        self.settings.theme = "light" if light else "dark"
        apply_theme("light" if light else "dark")

    def restore_settings(self) -> None:
        self._restored = layout.restore(self, self.settings)
        s = self.session
        for k, v in self.settings.view_settings().items():
            try:
                setattr(s, k, v)
            except ValueError:
                pass
        self.light_action.setChecked(self.settings.theme == "light")
        self.outline_action.setChecked(s.show_lung_outline)
        self.lesion_action.setChecked(s.show_lesion_outline)

    def save_settings(self) -> None:
        s = self.session
        layout.save(self, self.settings)
        self.settings.set_view_settings({"threshold": s.threshold, "opacity": s.opacity, "colormap": s.colormap,
                                         "method": s.method, "scale": s.scale,
                                         "ranking": s.ranking if s.ranking != "region" else "max"})
        self.settings.sync()

    _sized = False

    def showEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        super().showEvent(e)
        if not self._sized and not self._restored:  # first run: sensible sizes once laid out
            self._sized = True
            from PySide6.QtCore import QTimer

            QTimer.singleShot(0, lambda: layout.size_docks(self))

    def attach_engine(self, worker: Any, manager: Any) -> None:
        """The worker and model manager, once torch is imported: the window shows before them (its
        busy label says "loading"), and what was asked meanwhile runs now."""
        self.manager = self.controller.manager = manager
        self.bridge.attach(worker)
        self.models_dock.show_device()
        self.models_dock.fill_shipped()
        self.welcome.show_models()

    def set_exact_size(self, width: int, height: int) -> None:
        """``--geometry WxH``: exactly this size, with the default layout."""
        self._restored = False
        layout.exact_size(self, width, height)

    def closeEvent(self, e: Any) -> None:  # noqa: N802 - Qt API
        if not self._closed:
            self._closed = True
            self.save_settings()
            t0 = time.perf_counter()
            self.bridge.shutdown()
            log.info("worker stopped in %.2f s", time.perf_counter() - t0)
            if self._error_box is not None:
                self._error_box.close()
        super().closeEvent(e)
        self.closed.emit()
