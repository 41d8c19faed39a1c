"""What the app's Heatmap dock and "Sanity check" use: live lesion scores of the map on screen, slow
methods that report progress, stop when cancelled and show partial maps, and the trained-vs-randomised
view."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from cxr_studio.core.inspect.lesion_scores import LesionTarget, describe, lesion_scores, prepare_map, score
from cxr_studio.core.inspect.saliency_methods import Options, saliency_map
from cxr_studio.core.inspect.saliency_perturb import integrated_gradients, occlusion_map
from cxr_studio.core.inspect.sanity import explained_step, randomised_model
from cxr_studio.core.runtime.engine import Cancelled


from test_saliency_methods import tiny_net  # noqa: E402 - the same small unpadded net (tests/core is on sys.path)


@pytest.fixture
def net_and_x():
    torch.manual_seed(1)
    return tiny_net(), torch.rand(1, 3, 32, 32) * 2 - 1


# -- live lesion scores ------------------------------------------------------------------------------
def test_scores_of_a_map_on_the_lesion_and_off_it():
    lesion = np.zeros((512, 512), bool)
    lesion[100:200, 300:400] = True
    on = np.zeros((512, 512), np.float32)
    on[120:180, 320:380] = 1.0
    s = lesion_scores(on, lesion, threshold=0.5)
    assert s["pointing_hit"] == 1.0 and s["energy_inside"] == pytest.approx(1.0)
    assert s["iou"] == pytest.approx(60 * 60 / (100 * 100))
    off = np.roll(on, 250, axis=0)
    s2 = lesion_scores(off, lesion, threshold=0.5)
    assert s2["pointing_hit"] == 0.0 and s2["energy_inside"] == 0.0 and s2["iou"] == 0.0
    # the threshold only changes the IoU: everything above 0 is the whole image
    s3 = lesion_scores(on, lesion, threshold=0.0)
    assert s3["iou"] == pytest.approx(lesion.sum() / lesion.size)
    assert "peak in lesion" in describe(s) and "IoU at 0.50: 0.36" in describe(s)
    assert "peak outside lesion" in describe(s2)


def test_tolerance_counts_a_peak_just_outside():
    lesion = np.zeros((512, 512), bool)
    lesion[200:300, 200:300] = True
    m = np.zeros((512, 512), np.float32)
    m[250, 305] = 1.0  # 5 px right of the lesion
    assert lesion_scores(m, lesion, 0.5, tolerance_px=8)["pointing_hit"] == 1.0
    assert lesion_scores(m, lesion, 0.5, tolerance_px=2)["pointing_hit"] == 0.0


def test_large_images_are_scored_on_a_shrunk_grid():
    lesion = np.zeros((3000, 2400), bool)
    lesion[600:1200, 300:900] = True
    target = LesionTarget.from_mask(lesion, "lesion_mask")
    assert max(target.lesion.shape) == 1024 and target.source == "lesion_mask"
    m = np.zeros((3000, 2400), np.float32)
    m[700:1100, 400:800] = 1.0
    small = prepare_map(m, target)
    assert small.shape == target.lesion.shape
    s = score(small, target, 0.5)
    full = lesion_scores(m, lesion, 0.5)
    assert s["pointing_hit"] == 1.0 and s["energy_inside"] == pytest.approx(1.0, abs=1e-3)
    assert s["iou"] == pytest.approx(400 * 400 / (600 * 600), abs=0.01) and full["iou"] == pytest.approx(s["iou"])


def test_an_empty_map_points_nowhere():
    lesion = np.zeros((64, 64), bool)
    lesion[10:20, 10:20] = True
    s = lesion_scores(np.zeros((64, 64), np.float32), lesion, 0.3)
    assert s == {**s, "pointing_hit": 0.0, "energy_inside": 0.0, "iou": 0.0}


# -- slow methods: progress, cancel, partial maps ------------------------------------------------------
def test_occlusion_reports_partial_maps_and_ends_with_the_full_one(net_and_x):
    net, x = net_and_x
    seen, steps = [], []
    full = occlusion_map(net, x, 1, window=8, stride=4, batch_size=8,
                         progress=lambda d, t: steps.append((d, t)), partial=seen.append)
    assert steps[-1][0] == steps[-1][1] and len(steps) >= 3
    assert len(seen) == len(steps) - 1  # after every batch but the last
    assert all(p.shape == full.shape and 0 <= p.min() and p.max() <= 1 for p in seen)
    assert np.array_equal(full, occlusion_map(net, x, 1, window=8, stride=4, batch_size=8))


def test_integrated_gradients_partials_approach_the_result(net_and_x):
    net, x = net_and_x
    seen: list[np.ndarray] = []
    full = saliency_map(net, x, "integrated-gradients", None, 1, options=Options(ig_steps=32, batch_size=16),
                        partial=seen.append).map_input
    assert len(seen) == 3  # 32 steps in batches of 8
    err = [float(np.abs(p - full).mean()) for p in seen]
    assert err[-1] <= err[0] + 1e-6 and err[-1] < 0.05
    # the order of summation does not change the integral (Captum's own definition is in test_saliency_methods)
    a = integrated_gradients(net, x, 1, steps=16, batch_size=4)
    b = integrated_gradients(net, x, 1, steps=16, batch_size=16)
    assert np.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("method", ["occlusion", "integrated-gradients", "scorecam"])
def test_slow_methods_stop_when_cancelled(net_and_x, method):
    net, x = net_and_x
    cancel = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        cancel.set()  # the user presses Cancel after the first batch

    opts = Options(scorecam_batch=2, batch_size=4, ig_steps=16)
    with pytest.raises(Cancelled, match="cancelled"):
        saliency_map(net, x, method, "relu2", 1, options=opts, progress=progress, cancel=cancel)
    assert len(calls) == 1
    before = [p.detach().clone() for p in net.parameters()]
    saliency_map(net, x, method, "relu2", 1, options=opts)  # the model still works after a cancel
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, net.parameters()))


# -- sanity check view ----------------------------------------------------------------------------------
def test_randomised_model_stops_at_the_explained_layer(net_and_x):
    net, _ = net_and_x
    name, m = randomised_model(net, "relu1")
    assert name == explained_step(net, "relu1") == "conv1"
    for layer in ("conv1", "conv2", "fc"):
        assert not torch.equal(getattr(m, layer).weight, getattr(net, layer).weight)
    name2, m2 = randomised_model(net, "relu2")
    assert name2 == "conv2" and torch.equal(m2.conv1.weight, net.conv1.weight)
    assert not torch.equal(m2.conv2.weight, net.conv2.weight)


def test_map_on_grid_matches_the_full_resolution_path():
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.pipeline import PreprocessSpec, preprocess
    from cxr_studio.core.inspect.lesion_scores import map_on_grid

    ph = make_phantom(4, size=1600, abnormal=True)
    prep = preprocess(ph.radiograph(), PreprocessSpec(input_size=64, crop=True), ph.lung_mask)
    g = prep.geometry
    assert g.crop_box != (0, 0, 1600, 1600)  # a real crop
    target = LesionTarget.from_mask(ph.lesion_mask, "phantom")
    rng = np.random.default_rng(0)
    m = cv2_smooth(rng.random((64, 64)).astype(np.float32))
    fast = map_on_grid(m, g.crop_box, g.original_size, target)
    slow = prepare_map(g.map_to_original(m), target)
    assert fast.shape == slow.shape and np.abs(fast - slow).mean() < 0.01
    assert score(fast, target, 0.5)["pointing_hit"] == score(slow, target, 0.5)["pointing_hit"]


def cv2_smooth(a: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(a, (0, 0), 4)
