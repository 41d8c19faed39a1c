"""Lesion-level scores, baselines, bootstrap intervals, lesion masks (both layouts), sanity-check
similarity measures and deletion/insertion curves."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from cxr_studio.core.inspect import localisation as loc
from cxr_studio.core.inspect.faithfulness import curves, random_order, saliency_order
from cxr_studio.core.imaging.lesions import LesionError, find_lesion_mask, lesion_from_json, rasterise, read_via
from cxr_studio.core.inspect.sanity import cascade, explained_step, independent, parameter_layers, spearman, ssim


def square(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_tolerance_scales_with_the_image():
    assert loc.tolerance_for((512, 512), 8) == 8
    assert loc.tolerance_for((1024, 900), 8) == 16
    assert loc.tolerance_for((256, 256), 8) == 4


def test_pointing_with_tolerance_energy_and_iou_curve():
    lesion = square((512, 512), 100, 140, 100, 140)
    m = np.zeros((512, 512), np.float32)
    m[150, 120] = 1.0  # 10 px below the lesion: a miss at 8 px, a hit at 12 px
    assert not loc.score_map(m, lesion, 8)["hit"]
    assert loc.score_map(m, lesion, 12)["hit"]
    m2 = lesion.astype(np.float32) * 0.8 + 0.2 * square((512, 512), 0, 512, 0, 256)
    sc = loc.score_map(m2, lesion, 8)
    assert sc["hit"] and sc["energy"] == pytest.approx(1600 / (1600 + 0.2 * (512 * 256 - 1600)))
    curve = sc["iou_curve"]
    assert curve.shape == (len(loc.THRESHOLDS),)
    assert curve[0] == pytest.approx(lesion.sum() / (lesion | (m2 > 0)).sum())  # 0.05: everything lit
    assert curve[-1] == pytest.approx(1.0)  # 0.95 of the peak: exactly the lesion


def test_share_in_reach():
    shape = (100, 100)
    reach = square(shape, 20, 80, 20, 80)
    assert loc.share_in_reach(square(shape, 30, 40, 30, 40), reach) == (1.0, True)
    share, touches = loc.share_in_reach(square(shape, 10, 30, 30, 40), reach)  # half above the reach
    assert share == pytest.approx(0.5) and touches
    assert loc.share_in_reach(square(shape, 0, 10, 0, 10), reach) == (0.0, False)
    assert loc.share_in_reach(np.zeros(shape, bool), reach) == (0.0, False)


def test_pointing_ties_count_as_a_random_pick():
    lesion = square((100, 100), 0, 50, 0, 100)
    assert loc.pointing_hit(np.ones((100, 100)), lesion) == pytest.approx(0.5)  # flat: like a random point
    block = np.zeros((100, 100))
    block[40:60, 10:20] = 1.0  # a plateau half inside
    assert loc.pointing_hit(block, lesion) == pytest.approx(0.5)
    block[45, 15] = 2.0
    assert loc.pointing_hit(block, lesion) == 1.0


def test_thresholds_chosen_on_validation_or_leave_one_out():
    curves_ = np.array([[0.1, 0.5, 0.2], [0.2, 0.4, 0.3], [0.9, 0.0, 0.0]])
    thresholds = loc.THRESHOLDS
    val = np.zeros((2, len(thresholds)))
    val[:, 2] = 1.0
    full = np.zeros((3, len(thresholds)))
    full[:, :3] = curves_
    ious, ts = loc.ious_at_chosen(full, val)
    assert ts == [thresholds[2]] and list(ious) == [0.2, 0.3, 0.0]
    ious, ts = loc.ious_at_chosen(full, None)
    # image 0: others favour index 0 (1.1 vs 0.4); image 2: others favour index 1 (0.9 vs 0.3)
    assert list(ious) == [0.1, 0.2, 0.0]
    with pytest.raises(ValueError, match="at least two"):
        loc.ious_at_chosen(full[:1], None)


def test_bootstrap_interval():
    v = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = loc.bootstrap_ci(v, seed=1)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert loc.bootstrap_ci(np.ones(5)) == [1.0, 1.0]
    assert loc.bootstrap_ci(v, seed=3) == loc.bootstrap_ci(v, seed=3)


def test_uniform_baselines_are_exact():
    lungs = square((100, 100), 0, 100, 0, 50)
    lesion = square((100, 100), 0, 10, 0, 10)
    s = loc.uniform_scores(lungs, lesion, 0)
    assert s["hit"] == pytest.approx(100 / 5000) and s["energy"] == pytest.approx(100 / 5000)
    s_img = loc.uniform_scores(np.ones_like(lesion), lesion, 0)
    assert s_img["hit"] == pytest.approx(0.01)


def test_population_prior_is_leave_one_out():
    a = square((64, 64), 0, 16, 0, 16)  # top-left, twice
    b = square((64, 64), 48, 64, 48, 64)  # bottom-right, once
    grids = [loc.to_prior_grid(m) for m in (a, a, b)]
    pts = loc.population_prior_points(grids)
    assert loc.prior_hit(pts[2], b, 0) is False and loc.prior_hit(pts[2], a, 0) is True
    assert loc.prior_hit(pts[0], a, 0)  # the other top-left image still outweighs b
    with pytest.raises(ValueError):
        loc.population_prior_points(grids[:1])


def test_summary_keys_and_values():
    rows = [{"hit": h, "energy": e, "iou_curve": np.full(len(loc.THRESHOLDS), e)} for h, e in
            [(True, 0.5), (False, 0.1), (True, 0.3)]]
    s = loc.summarise(rows)
    assert s["n"] == 3 and s["pointing_game"] == pytest.approx(2 / 3)
    assert s["energy_inside"] == pytest.approx(0.3) and s["threshold_source"] == "leave-one-out"
    assert s["pointing_ci"][0] <= s["pointing_game"] <= s["pointing_ci"][1]


def test_via_annotations_rasterise_and_lookup(tmp_path):
    root = tmp_path / "ChinaSet_AllFiles"
    (root / "CXR_png").mkdir(parents=True)
    img = root / "CXR_png" / "CHNCXR_0001_1.png"
    cv2.imwrite(str(img), np.zeros((512, 512), np.uint8))
    via = {"CHNCXR_0001_1.png123": {"filename": "CHNCXR_0001_1.png", "size": 123, "file_attributes": {}, "regions": [
        {"shape_attributes": {"name": "polygon", "all_points_x": [10, 50, 50, 10], "all_points_y": [10, 10, 40, 40]},
         "region_attributes": {"Nodule": "good"}},
        {"shape_attributes": {"name": "point", "cx": 300, "cy": 300}, "region_attributes": {}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [1]}, "region_attributes": {}}]}}
    (root / "Annotations_AllinOne_json.json").write_text(json.dumps(via))
    m, src = find_lesion_mask(img, (512, 512))
    assert src == "via-json" and m[25, 30] and m[300, 300] and not m[200, 200]
    assert 31 * 41 <= m[:100, :100].sum() <= 41 * 31 + 200
    np.testing.assert_array_equal(lesion_from_json(img, (512, 512)), m)
    # our layout wins when both exist
    (root / "lesion_mask").mkdir()
    png = np.zeros((256, 256), np.uint8)
    png[100:120, 100:120] = 255
    cv2.imwrite(str(root / "lesion_mask" / "CHNCXR_0001_1_lesion.png"), png)
    m2, src2 = find_lesion_mask(img, (512, 512))
    assert src2 == "lesion_mask" and m2.shape == (512, 512) and m2[220, 220] and not m2[25, 30]
    assert find_lesion_mask(root / "CXR_png" / "other_1.png", (512, 512)) == (None, "none")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LesionError, match="not a readable annotation file"):
        read_via(tmp_path / "bad.json")
    assert not rasterise([], (8, 8)).any()


def test_similarity_measures():
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 3)
    assert spearman(a, a) == pytest.approx(1.0) and ssim(a, a) == pytest.approx(1.0)
    assert spearman(a, a[::-1, ::-1].copy()) < 0.5
    assert spearman(a, np.zeros_like(a)) == 0.0


def test_randomisation_never_touches_the_model():
    from test_saliency_methods import tiny_net  # tests/core is on sys.path (pytest prepend mode)

    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    names = [n for n, _ in parameter_layers(net)]
    assert names == ["conv1", "conv2", "fc"]
    assert explained_step(net, "relu2") == "conv2" and explained_step(net, None) == "conv2"
    steps = [(n, {k: v.clone() for k, v in m.state_dict().items()}) for n, m in cascade(net)]
    assert [n for n, _ in steps] == ["fc", "conv2", "conv1"]
    assert not torch.equal(steps[0][1]["fc.weight"], before["fc.weight"])
    assert torch.equal(steps[0][1]["conv2.weight"], before["conv2.weight"])
    assert not torch.equal(steps[1][1]["conv2.weight"], before["conv2.weight"])
    for n, m in independent(net):
        changed = [k for k in before if not torch.equal(m.state_dict()[k], before[k])]
        assert changed and all(k.startswith(n + ".") for k in changed)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_deletion_beats_insertion_for_a_map_the_model_uses():
    """A model that reads only a bright square: deleting it first drops the score at once."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        w = torch.zeros(2, 32, 32)
        w[1, 8:16, 8:16] = 0.25  # logit 2 for the sharp square, negative once it is blurred away
        net[2].weight.copy_(w.reshape(2, -1))
        net[2].bias.copy_(torch.tensor([0.0, -14.0]))
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:16, 8:16] = 1.0
    good = np.zeros((32, 32), np.float32)
    good[8:16, 8:16] = 1.0
    c = curves(net, x, saliency_order(good), 1, steps=8)
    assert c["deletion_auc"] < c["insertion_auc"]
    r = curves(net, x, random_order(32 * 32, seed=0), 1, steps=8)
    assert c["deletion_auc"] < r["deletion_auc"] and c["insertion_auc"] > r["insertion_auc"]
    assert len(c["deletion"]) == 9 and c["deletion"][0] == pytest.approx(c["insertion"][-1])
