"""Issue 14 in the app: the lesion outline beside an image is drawn (toggled, magenta), the Heatmap
dock scores the map on screen against it live, slow methods run cancellable with partial maps, and
"Sanity check" shows the map beside the randomised model's. Uses phantoms written in our layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxr_studio.core.phantoms.phantom import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("ph"), 4, seed=7, size=320, abnormal_fraction=1.0)


def _abnormal_image(root: Path) -> Path:
    return sorted((root / "CXR_png").glob("*_1.png"))[0]


def _open_file(qtbot: Any, w: Any, path: Path, ckpt: Path) -> None:
    w.auto_default_model = False
    w.open_image(path)
    if not w.session.models:
        w.controller.load_checkpoint(str(ckpt))
    qtbot.waitUntil(lambda: w.session.radiograph is not None and w.session.heatmap is not None
                    and w.session.lesion is not None and w.session.lesion_scores is not None, timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)


def test_lesion_outline_beside_a_file_is_drawn_and_scored_live(qtbot: Any, window: Any, phantom_folder: Path,
                                                              tiny_checkpoint: Path) -> None:
    w = window
    path = _abnormal_image(phantom_folder)
    _open_file(qtbot, w, path, tiny_checkpoint)
    lesion = w.session.lesion
    assert lesion.source == "lesion_mask" and lesion.lesion.any()
    assert w.view.lesion_outline.data is not None and w.view.lesion_outline.isVisible()
    assert w.heatmap_dock.lesion.isEnabled() and w.heatmap_dock.lesion.isChecked()
    # the scores are the core's on the same map
    from cxr_studio.core.imaging.lesions import find_lesion_mask
    from cxr_studio.core.inspect.lesion_scores import lesion_scores

    hv, g = w.session.heatmap, w.session.preprocessed.geometry
    mask, _ = find_lesion_mask(path, w.session.radiograph.shape)
    m = g.map_to_original(np.where(hv.valid, hv.map_input, 0) if hv.valid is not None else hv.map_input)
    ref = lesion_scores(m, mask, w.session.threshold)
    got = w.session.lesion_scores
    assert got["pointing_hit"] == ref["pointing_hit"]
    assert got["energy_inside"] == pytest.approx(ref["energy_inside"], abs=0.02)
    assert got["iou"] == pytest.approx(ref["iou"], abs=0.02)
    assert "energy inside" in w.heatmap_dock.scores.text()
    assert w.session.render_settings()["lesion_scores"] == got  # what the export sidecar records
    # a threshold change rescored without a worker trip
    submitted = w.bridge.submitted
    w.session.threshold = 0.0
    low = w.session.lesion_scores
    w.session.threshold = 0.95
    high = w.session.lesion_scores
    assert w.bridge.submitted == submitted
    assert low["threshold"] == 0.0 and high["threshold"] == 0.95 and low["iou"] != high["iou"]
    assert f"IoU at 0.95: {high['iou']:.2f}" in w.heatmap_dock.scores.text()
    # the toggle (dock checkbox and View action are one session value)
    w.heatmap_dock.lesion.setChecked(False)
    assert not w.view.lesion_outline.isVisible() and not w.lesion_action.isChecked()
    w.lesion_action.trigger()
    assert w.view.lesion_outline.isVisible() and w.heatmap_dock.lesion.isChecked()


def test_an_image_without_an_outline_says_so(qtbot: Any, window: Any, tmp_path: Path, tiny_checkpoint: Path) -> None:
    from cxr_studio.core.imaging.png import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = window
    path = tmp_path / "plain.png"
    write_png(path, make_phantom(2, size=256, abnormal=True).image)
    w.auto_default_model = False
    assert w.heatmap_dock.scores.text() == ""  # no image yet: nothing to say about outlines
    w.open_image(path)
    w.controller.load_checkpoint(str(tiny_checkpoint))
    qtbot.waitUntil(lambda: w.session.heatmap is not None, timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    assert w.session.lesion is None and w.session.lesion_scores is None
    assert not w.view.lesion_outline.isVisible() and not w.heatmap_dock.lesion.isEnabled()
    assert "no lesion outline" in w.heatmap_dock.scores.text()


def test_demo_phantom_brings_its_own_lesions(qtbot: Any, window: Any, tiny_checkpoint: Path) -> None:
    w = window
    w.open_demo(seed=3, size=320)
    if not w.session.models:
        w.controller.load_checkpoint(str(tiny_checkpoint))
    qtbot.waitUntil(lambda: w.session.lesion is not None and w.session.lesion_scores is not None, timeout=60000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    assert w.session.lesion.source == "phantom" and w.view.lesion_outline.isVisible()


def test_slow_method_shows_partial_maps_and_cancels(qtbot: Any, loaded_window: Any, monkeypatch: Any) -> None:
    from cxr_studio.gui import saliency_runner

    monkeypatch.setattr(saliency_runner, "PARTIAL_EVERY_S", 0.0)
    w = loaded_window
    shown: list[Any] = []
    w.controller.heatmap_ready.connect(shown.append)
    w.session.method = "occlusion"
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "method", None) == "occlusion", timeout=120000)
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    occl = [hv for hv in shown if hv.method == "occlusion"]
    assert len(occl) >= 2 and occl[-1] is w.session.heatmap  # partial maps came first
    assert not np.array_equal(occl[0].map_input, occl[-1].map_input)
    # a new request cancels a slow job still running: its partial maps stop, the new method shows
    w.session.method = "integrated-gradients"
    qtbot.waitUntil(lambda: bool(w.bridge.cancellable()), timeout=10000)
    assert w.cancel_button.isVisible()
    w.session.method = "gradcam"
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "method", None) == "gradcam" and w.bridge.pending == 0, timeout=60000)
    assert w.session.heatmap.method == "gradcam" and w.last_error is None


def test_esc_cancels_a_slow_heatmap(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    before = w.session.heatmap
    w.session.method = "integrated-gradients"
    qtbot.waitUntil(lambda: bool(w.bridge.cancellable()), timeout=10000)
    w.bridge.cancel_all()
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
    assert w.last_error is None  # a cancel is not an error
    assert w.session.heatmap is before or w.session.heatmap.method == "integrated-gradients"


def test_sanity_check_shows_trained_and_randomised_maps(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    w.session.method = "gradcam"
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "method", None) == "gradcam" and w.bridge.pending == 0, timeout=60000)
    w.heatmap_dock.sanity.click()
    d = w.sanity_dialog
    qtbot.waitUntil(lambda: d.result is not None, timeout=60000)
    r = d.result
    assert r.trained.method == "gradcam" and r.randomised.method == "gradcam"
    assert r.randomised_down_to == "conv5"  # the deepest conv: the layer Grad-CAM explains at relu5
    assert np.allclose(r.trained.map_input, w.session.heatmap.map_input, atol=1e-5)
    assert not np.allclose(r.trained.map_input, r.randomised.map_input)
    assert set(r.scores) == {"spearman_randomised", "ssim_randomised", "passes"}
    assert ("passes" in d.verdict.text()) or ("FAILS" in d.verdict.text())
    assert all(not p.pixmap().isNull() for p in d.pictures)
    # the model on screen is untouched: the same map again
    w.session.method = "activation"
    w.session.method = "gradcam"
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "method", None) == "gradcam" and w.bridge.pending == 0, timeout=60000)
    assert np.allclose(r.trained.map_input, w.session.heatmap.map_input, atol=1e-5)
    d.close()


def test_sanity_check_without_a_heatmap_says_what_is_missing(qtbot: Any, window: Any) -> None:
    from cxr_studio.gui.sanity_dialog import run_sanity_check

    assert run_sanity_check(window) is None
    assert "Open an image and a model first" in window.statusBar().currentMessage()
