"""Main window behaviour: errors keep the app alive, end-to-end export, compare and mosaic docks,
persistence, closing stops the worker."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def test_worker_failure_shows_one_error_and_keeps_everything(qtbot: Any, loaded_window: Any, tmp_path: Path) -> None:
    w = loaded_window
    models_before = list(w.session.models)
    heat_before = w.session.heatmap
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a checkpoint")
    w.controller.load_checkpoint(str(bad))
    qtbot.waitUntil(lambda: w.last_error is not None, timeout=30000)
    assert "not-a-checkpoint.pt" in w.last_error and "Traceback" not in w.last_error
    assert w._error_box is not None and w._error_box.isVisible()
    assert list(w.session.models) == models_before  # nothing loaded is lost
    assert w.session.heatmap is heat_before
    # a failing job in the middle of work: the worker keeps running and the app stays usable
    w.last_error = None
    w.bridge.submit("boom", lambda: 1 / 0)
    qtbot.waitUntil(lambda: w.last_error is not None, timeout=30000)
    assert "ZeroDivisionError" in w.last_error
    w.session.channel = 1
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "channel", None) == 1, timeout=30000)
    assert w.bridge.worker.is_alive()


def test_unreadable_image_is_one_clear_message(qtbot: Any, window: Any, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    window.open_image(bad)
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=30000)
    assert "broken.png" in window.last_error
    assert window.session.radiograph is None


def test_end_to_end_layer_strongest_threshold_export(qtbot: Any, loaded_window: Any, tmp_path: Path) -> None:
    w = loaded_window
    s = w.session
    # pick a layer in the layer browser
    item = w.layers_dock.items["relu4"]
    w.layers_dock.tree.setCurrentItem(item)
    assert s.layer == "relu4"
    qtbot.waitUntil(lambda: w.channels_dock.info.text().startswith("relu4"), timeout=30000)
    # the strongest channel by mean inside the lungs
    s.ranking = "lungs"
    w.channels_dock.strongest.click()
    act = w.controller.activation("relu4")
    p = s.preprocessed
    from cxr_studio.core.inspect.activations import rank_channels

    best = rank_channels(act, "lungs", geometry=p.geometry, lung_mask=p.lung_mask)[0][0]
    qtbot.waitUntil(lambda: s.channel == best and getattr(w.session.heatmap, "channel", None) == best, timeout=30000)
    assert w.session.heatmap.layer == "relu4"
    # a threshold through the spin box
    w.heatmap_dock.threshold_spin.setValue(0.35)
    assert s.threshold == pytest.approx(0.35)
    done: list[Any] = []
    w.export_overlay(tmp_path / "view", on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=60000)
    res = done[0]
    for f in (res.png, res.npy, res.json):
        assert Path(f).is_file()
    side = json.loads(Path(res.json).read_text())
    flat = json.dumps(side)
    assert "relu4" in flat and str(best) in flat and "0.35" in flat
    heat = np.load(res.npy)
    assert heat.shape == s.radiograph.pixels.shape and 0 <= heat.min() and heat.max() <= 1
    import cv2

    png = cv2.imread(str(res.png))
    assert png.shape[:2] == s.radiograph.pixels.shape
    # the exported map is the shown one, mapped onto the original grid
    ref = p.geometry.map_to_original(w.session.heatmap.map_input)
    np.testing.assert_allclose(heat, ref, atol=1e-6)
    # exporting again to the same stem is refused with a clear message, the files stay
    w.last_error = None
    w.export_overlay(tmp_path / "view")
    qtbot.waitUntil(lambda: w.last_error is not None, timeout=30000)
    assert Path(res.png).is_file()


def test_gradcam_source_uses_the_worker_and_updates_the_view(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    before = w.bridge.submitted
    w.heatmap_dock.source.setCurrentIndex(w.heatmap_dock.source.findData("gradcam"))
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "method", None) == "gradcam", timeout=60000)
    assert w.bridge.submitted > before
    n = w.session.preprocessed.spec.input_size
    assert w.session.heatmap.map_input.shape == (n, n)


def test_compare_dock_rows_figure_and_mosaic(qtbot: Any, loaded_window: Any, tiny_checkpoint: Path,
                                             tmp_path: Path) -> None:
    w = loaded_window
    w.controller.load_checkpoint(str(tiny_checkpoint))  # a second model
    qtbot.waitUntil(lambda: len(w.session.models) == 2, timeout=30000)
    w.compare_dock.raise_()
    w.compare_dock.refresh()
    qtbot.waitUntil(lambda: len(w.compare_dock.rows) == 2, timeout=60000)
    assert len(w.compare_dock.heat_items) == 4  # strongest channel + Grad-CAM per model
    w.session.threshold = 0.5
    assert all((np.asarray(i.lut)[:127, 3] == 0).all() for i in w.compare_dock.heat_items)  # shared threshold
    out = w.save_image("compare", tmp_path / "compare.png")
    assert out is not None and out.stat().st_size > 0
    import cv2

    fig = cv2.imread(str(out))
    assert fig.shape[0] > fig.shape[1] * 0.9  # two rows stacked
    # filter mosaic: conv1 tiles are drawn for the current model
    qtbot.waitUntil(lambda: w.mosaic_dock.conv1 is not None, timeout=30000)
    assert w.save_image("mosaic", tmp_path / "mosaic.png") is not None
    assert w.save_image("grid", tmp_path / "grid.png") is not None


def test_activation_maximisation_progress_and_cancel(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    d = w.mosaic_dock
    d.layer.setCurrentText("conv2")
    d.unit.setValue(1)
    d.run_button.click()
    assert d.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: d.progress.value() > 0, timeout=60000)
    d.cancel_button.click()
    qtbot.waitUntil(lambda: d.run_button.isEnabled(), timeout=60000)
    assert d.am is None  # cancelled: nothing shown, no error dialog
    assert w.last_error is None


def test_settings_persist_view_and_recent_files(qtbot: Any, window: Any, settings: Any, tmp_path: Path) -> None:
    window.session.threshold = 0.25
    window.session.colormap = "inferno"
    img = tmp_path / "x.png"
    settings.add_recent_file(img)
    window.close()
    from cxr_studio.gui.settings import Settings

    again = Settings(settings._q.fileName())
    assert again.view_settings()["threshold"] == pytest.approx(0.25)
    assert again.view_settings()["colormap"] == "inferno"
    assert again.recent_files()[0].endswith("x.png")
    assert again.window_state()[0] is not None


def test_closing_stops_the_worker_and_leaks_no_windows(qtbot: Any, settings: Any, phantom: Any,
                                                       tiny_checkpoint: Path) -> None:
    from PySide6.QtWidgets import QApplication

    from cxr_studio.core.runtime.engine import ModelManager, Worker
    from cxr_studio.core.runtime.session import Session
    from cxr_studio.gui.main_window import MainWindow

    before = {id(x) for x in QApplication.topLevelWidgets() if x.isVisible()}
    worker = Worker()
    w = MainWindow(Session(), worker, ModelManager("cpu"), settings)
    w.show()
    w.open_radiograph(phantom.radiograph(), phantom.lung_mask, "phantom")
    w.controller.load_checkpoint(str(tiny_checkpoint))
    w.show_error("a message box that must close with the window")
    w.close()
    assert not worker.is_alive()
    w.deleteLater()
    qtbot.wait(50)
    after = {id(x) for x in QApplication.topLevelWidgets() if x.isVisible()}
    assert after <= before


def test_export_folder_next_image_and_unload(qtbot: Any, loaded_window: Any, tmp_path: Path) -> None:
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = loaded_window
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        write_png(src / f"p{i}.png", make_phantom(10 + i, size=256).image)
    (src / "broken.png").write_bytes(b"not a png at all")
    codes: list[int] = []
    w.export_folder(str(src), str(tmp_path / "out"), on_done=codes.append)
    qtbot.waitUntil(lambda: bool(codes), timeout=120000)
    assert codes == [1]  # one bad image: reported, the others exported
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    assert "summary.csv" in w.last_error
    # next / previous image in the folder of the opened file
    w.open_image(src / "p0.png")
    qtbot.waitUntil(lambda: w.session.radiograph is not None and "p0.png" in str(w.session.radiograph.path), timeout=30000)
    w.step_image(1)
    assert w.image_path.name != "p0.png"
    assert str(src / "p0.png") in w.settings.recent_files()[1]
    # unloading the only model keeps the image
    mid = w.session.current_model_id
    w.models_dock.unload_button.click()
    qtbot.waitUntil(lambda: mid not in w.session.models, timeout=30000)
    assert w.session.radiograph is not None and w.session.current_model_id is None
    assert w.view.heat_map is None and not w.view.heat.isVisible()  # no model, no overlay
    w.show_about()


def test_failed_pipeline_rerun_reverts_the_settings(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    d = w.pipeline_dock
    shown = w.session.preprocessed
    d.segmentation.setCurrentText("atlas")  # no atlas configured: the worker raises a clear error
    d.apply.click()
    qtbot.waitUntil(lambda: w.last_error is not None, timeout=30000)
    assert "atlas" in w.last_error.lower()
    qtbot.waitUntil(lambda: d.segmentation.currentText() == "auto", timeout=30000)
    assert w.session.preprocessed is shown and w.view.heat_map is not None
    # a working change re-runs the pipeline in the worker and shows the new stages
    d.clahe.setChecked(False)
    d.apply.click()
    qtbot.waitUntil(lambda: w.session.preprocessed is not shown and not w.session.preprocessed.spec.clahe,
                    timeout=30000)


def test_excepthook_shows_a_message(qtbot: Any, window: Any, monkeypatch: Any) -> None:
    import sys

    from cxr_studio.gui.app import install_excepthook

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    install_excepthook(lambda: window)
    try:
        raise RuntimeError("something odd")
    except RuntimeError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    assert "something odd" in window.last_error and window._error_box.isVisible()
