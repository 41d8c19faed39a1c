"""Every dock builds from a Session and mirrors it; display controls never call the worker."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest



class _NoWorker:
    """A worker that must not be used (dock construction does no torch work)."""

    calls = 0

    def submit(self, *a: Any, **k: Any) -> Any:
        _NoWorker.calls += 1
        raise RuntimeError("no worker in this test")

    def shutdown(self, wait: bool = True) -> None:
        pass


def _controller(qtbot: Any) -> Any:
    from cxr_studio.core.runtime.session import Session
    from cxr_studio.gui.bridge import WorkerBridge
    from cxr_studio.gui.controller import Controller

    bridge = WorkerBridge(_NoWorker())
    return Controller(Session(), bridge, manager=None)


@pytest.mark.parametrize("name", ["pipeline", "models", "layers", "channels", "heatmap", "mosaic", "compare"])
def test_every_dock_builds_from_a_session(qtbot: Any, name: str) -> None:
    import importlib

    c = _controller(qtbot)
    mod = importlib.import_module(f"cxr_studio.gui.docks.{name}_dock")
    cls = next(getattr(mod, n) for n in dir(mod) if n.endswith("Dock") and n != "QDockWidget")
    dock = cls(c.session, c)
    qtbot.addWidget(dock)
    dock.show()
    assert dock.widget() is not None
    assert dock.objectName().endswith("Dock")
    assert c.bridge.submitted == 0  # nothing loaded: no work sent


def test_heatmap_dock_mirrors_the_session_both_ways(qtbot: Any) -> None:
    from cxr_studio.gui.docks.heatmap_dock import SLIDER_STEPS, HeatmapDock

    c = _controller(qtbot)
    s = c.session
    dock = HeatmapDock(s, c)
    qtbot.addWidget(dock)
    s.threshold = 0.42
    assert dock.threshold_slider.value() == round(0.42 * SLIDER_STEPS)
    assert dock.threshold_spin.value() == pytest.approx(0.42)
    dock.threshold_slider.setValue(700)
    assert s.threshold == pytest.approx(0.7)
    assert dock.threshold_spin.value() == pytest.approx(0.7)  # the spin box follows the slider
    dock.opacity_slider.setValue(250)
    assert s.opacity == pytest.approx(0.25)
    dock.colormap.setCurrentText("viridis")
    assert s.colormap == "viridis"
    dock.source.setCurrentIndex(dock.source.findData("gradcam"))
    assert s.method == "gradcam"
    dock.scale.setCurrentIndex(dock.scale.findData("layer"))
    assert s.scale == "layer"
    dock.outline.setChecked(False)
    assert s.show_lung_outline is False


def test_sliders_change_the_overlay_lut_without_a_worker_call(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    calls = []
    real_submit = w.bridge.worker.submit
    w.bridge.worker.submit = lambda *a, **k: calls.append(a) or real_submit(*a, **k)
    dock = w.heatmap_dock
    heat = w.view.heat
    dock.threshold_slider.setValue(600)
    assert w.session.threshold == pytest.approx(0.6)
    lut = np.asarray(heat.lut)
    assert lut.shape == (256, 4)
    assert (lut[:153, 3] == 0).all() and (lut[154:, 3] == 255).all()  # index/255 < 0.6 transparent
    dock.opacity_slider.setValue(300)
    assert heat.opacity() == pytest.approx(0.3)
    before = np.asarray(heat.lut)[200, :3].copy()
    dock.colormap.setCurrentText("gray")
    assert not np.array_equal(np.asarray(heat.lut)[200, :3], before)
    assert calls == []  # no worker round trip for display settings
    assert w.view.heat_map is not None


def test_channel_grid_click_arrows_and_page_keys(qtbot: Any, loaded_window: Any) -> None:
    from PySide6.QtCore import Qt

    w = loaded_window
    grid = w.channels_dock
    qtbot.waitUntil(lambda: grid.model.rowCount() > 0, timeout=30000)
    n = grid.model.rowCount()
    assert n == w.controller.activation().shape[0]
    # the grid is sorted by the ranking: the first cell is the strongest channel
    act = w.controller.activation()
    assert grid.model.channel_at(0) == int(np.argmax(act.reshape(n, -1).max(axis=1)))
    row = 3
    idx = grid.model.index(row)
    grid.view.setCurrentIndex(idx)
    ch = grid.model.channel_at(row)
    assert w.session.channel == ch
    old_map = w.view.heat_map.copy()
    qtbot.keyClick(grid.view, Qt.Key.Key_Right)
    assert w.session.channel == grid.model.channel_at(row + 1)
    assert not np.array_equal(old_map, w.view.heat_map)  # the view follows the channel
    layer = w.session.layer
    qtbot.keyClick(grid.view, Qt.Key.Key_PageUp)
    assert w.session.layer != layer
    assert w.session.layer in w.session.browsable_layers()
    qtbot.waitUntil(lambda: grid.info.text().startswith(w.session.layer), timeout=30000)  # grid follows


def test_channel_grid_is_virtualised_for_512_channels(qtbot: Any) -> None:
    """Thumbnails become QImages only when a cell is drawn: 512 channels cost a screenful."""
    from cxr_studio.gui.docks.channels_dock import ChannelsDock

    c = _controller(qtbot)
    dock = ChannelsDock(c.session, c)
    qtbot.addWidget(dock)
    dock.resize(360, 300)
    dock.show()
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 255, (512, 56, 56, 4), dtype=np.uint8)
    c.thumbnails_ready.emit("conv5_4", thumbs)
    qtbot.wait(50)
    m = dock.model
    assert m.rowCount() == 512
    assert 0 < len(m._images) < 100  # only the visible cells were rendered
    ranking = [(int(ch), float(-ch)) for ch in rng.permutation(512)]
    c.ranking_ready.emit("conv5_4", ranking)
    assert [m.channel_at(i) for i in range(5)] == [r[0] for r in ranking[:5]]
    img = m.data(m.index(0), 1)  # DecorationRole
    assert img.width() == 56 and img.pixelColor(0, 0).red() == thumbs[ranking[0][0], 0, 0, 0]


def test_dropping_files_opens_images_and_loads_checkpoints(qtbot: Any, window: Any, tmp_path: Any) -> None:
    from PySide6.QtCore import QMimeData, QUrl

    opened, loaded = [], []
    window.controller.open_image = lambda src, mask=None: opened.append(src)
    window.controller.load_checkpoint = lambda p, untrained=False: loaded.append(p)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "a.png")), QUrl.fromLocalFile(str(tmp_path / "m.pt"))])

    class _Drop:
        def mimeData(self) -> Any:
            return mime

        def acceptProposedAction(self) -> None:
            pass

    window.dropEvent(_Drop())
    assert opened == [str(tmp_path / "a.png")] and loaded == [str(tmp_path / "m.pt")]


def test_view_readout_outline_region_and_stages(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    v, s = w.view, w.session
    h, wd = s.radiograph.pixels.shape
    gray, act = v.value_at(wd / 2, h / 2)
    assert gray == pytest.approx(float(s.radiograph.pixels[h // 2, wd // 2]))
    lo, hi = v.value_range
    assert act is not None and lo - 1e-9 <= act <= hi + 1e-9
    assert v.value_at(-50, -50) == (None, None)
    # lung outline toggle
    assert v.outline.isVisible()
    w.heatmap_dock.outline.setChecked(False)
    assert not v.outline.isVisible() and not w.outline_action.isChecked()
    # a drawn rectangle becomes the session's region and switches ranking to it
    w.heatmap_dock.region_requested.emit("rect")
    assert s.region is not None and s.region.kind == "rect" and s.ranking == "region"
    qtbot.waitUntil(lambda: w.channels_dock.sort.currentData() == "region", timeout=10000)
    w.heatmap_dock.region_cleared.emit()
    assert s.region is None
    # clicking a pipeline stage shows it centrally (without the overlay), "original" brings it back
    qtbot.waitUntil(lambda: w.pipeline_dock.stages.count() > 3, timeout=10000)
    w.pipeline_dock.stage_clicked.emit("clahe")
    assert v.showing_stage == "clahe" and not v.heat.isVisible()
    assert v.base.image.shape == s.preprocessed.enhanced.shape
    w.pipeline_dock.stage_clicked.emit("original")
    assert v.showing_stage == "original" and v.heat.isVisible()


def test_heatmap_dock_offers_no_class_or_image_tools_before_there_is_a_model_or_image(
        qtbot: Any, window: Any, phantom: Any, tiny_checkpoint: Any) -> None:
    dock = window.heatmap_dock
    image_tools = [dock.sanity, *dock.region_buttons]
    assert not dock.klass.isEnabled() and dock.klass.currentText() == "no model loaded"
    assert dock.klass.currentData() is None
    assert not any(b.isEnabled() for b in image_tools)
    window.open_radiograph(phantom.radiograph(), phantom.lung_mask, "phantom")
    qtbot.waitUntil(lambda: window.session.radiograph is not None, timeout=60000)
    assert all(b.isEnabled() for b in image_tools)
    assert not dock.klass.isEnabled()  # an image, still no model
    window.controller.load_checkpoint(str(tiny_checkpoint))
    qtbot.waitUntil(lambda: window.session.current_model is not None, timeout=60000)
    assert dock.klass.isEnabled()
    names = window.session.current_model.class_names
    assert [dock.klass.itemText(i) for i in range(dock.klass.count())] == [f"{i}: {n}" for i, n in enumerate(names)]
    assert dock.klass.currentData() == window.session.class_index
