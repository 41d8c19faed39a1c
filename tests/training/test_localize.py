"""``cxr-studio-train localize`` with the shipped demo model on fresh abnormal phantoms (seeds 310000+;
the model was trained on seeds < 100000): Grad-CAM points at the lesions, the untrained twin does
not, randomising the weights breaks the maps, deletion beats insertion; the CLI writes strict JSON
with the documented keys; a short real-data run when ../shared/data is present."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_studio.core.pipeline import preprocess
from cxr_studio.core.models.checkpoint import load_checkpoint
from cxr_studio.core.phantoms.phantom import make_phantom, write_phantom_dataset
from cxr_studio.core.resources import DEMO_MODEL, find_resource
from cxr_studio.training.cli import main
from cxr_studio.training.data import scan_roots
from cxr_studio.training.localize import localize
from cxr_studio.training.localize_scoring import Context, Prepared, reach

SIZE = 256


@pytest.fixture(scope="module")
def demo_ckpt() -> str:
    path = find_resource(DEMO_MODEL)
    assert path is not None, "resources/models/cxrnet-demo.pt is missing"
    return str(path)


@pytest.fixture(scope="module")
def scored(demo_ckpt, tmp_path_factory) -> dict:
    """12 test + 4 validation abnormal phantoms, Grad-CAM and the strongest channel."""
    root = write_phantom_dataset(tmp_path_factory.mktemp("loc") / "ph", 16, seed=310_000, size=SIZE,
                                 abnormal_fraction=1.0)
    ids = sorted(s.id for s in scan_roots([root]))
    split = root.parent / "split.json"
    split.write_text(json.dumps({"train": [], "val": ids[:4], "test": ids[4:]}))
    return localize(demo_ckpt, [str(root)], split_file=str(split), methods=["gradcam", "channel-max"],
                    sanity_images=2, faithfulness_steps=6)


def test_gradcam_points_at_lesions_and_the_untrained_twin_does_not(scored):
    assert scored["n_images"] == 12 and scored["n_validation_images"] == 4
    g = scored["methods"]["gradcam"]
    assert g["pointing_game"] >= 0.75, g
    lo, hi = g["pointing_ci"]
    assert lo <= g["pointing_game"] <= hi
    twin = scored["baselines"]["untrained"]["gradcam"]["pointing_game"]
    chance = scored["baselines"]["uniform_lungs"]["pointing_game"]
    assert twin <= 0.35 and twin < g["pointing_game"] - 0.4
    assert chance < 0.3 and g["energy_inside"] > scored["baselines"]["uniform_image"]["energy_inside"]
    assert g["threshold_source"] == "validation" and 0 < g["miou"] < 1
    assert scored["methods"]["channel-max"]["pointing_game"] >= 0.6


def test_randomisation_drops_spearman(scored):
    for m in ("gradcam", "channel-max"):
        s = scored["sanity"][m]
        assert s["explained_layer"] == "conv5" and s["n_images"] == 2
        assert s["spearman_randomised"] < 0.5 and s["passes"]
        assert [c["layer"] for c in s["cascade"]][:4] == ["fc8", "fc7", "fc6", "conv5"]
        assert s["cascade"][-1]["spearman"] < 0.5  # every layer random
    # the strongest channel does not depend on the classifier: randomising fc layers leaves it as it was
    assert scored["sanity"]["channel-max"]["cascade"][0]["spearman"] == pytest.approx(1.0)


def test_reach_of_the_layer_maps(scored, demo_ckpt):
    """Every phantom lesion is within conv5's reach in part; a lesion at the crop's corner is not."""
    rc = scored["reach"]
    assert 0.5 < rc["lesion_share"] <= 1 and 0.3 < rc["lungs_share"] < 1 and rc["n_unreachable"] == 0
    assert all(0 <= r["lesion_in_reach"] <= 1 and r["lesion_reachable"] for r in scored["per_image"])
    ck = load_checkpoint(demo_ckpt)
    rad = make_phantom(seed=310_000, size=SIZE, abnormal=True).radiograph()
    pre = preprocess(rad, ck.spec)
    y0, x0, y1, x1 = pre.geometry.crop_box
    corner, centre = np.zeros(rad.pixels.shape, bool), np.zeros(rad.pixels.shape, bool)
    corner[y0:y0 + 4, x0:x0 + 4] = True
    centre[(y0 + y1) // 2 - 3:(y0 + y1) // 2 + 3, (x0 + x1) // 2 - 3:(x0 + x1) // 2 + 3] = True
    ctx = Context(ck.model, ck.spec, "conv5", ["gradcam"], 2.0, None)
    x = pre.tensor()
    for lesion, share, ok in ((corner, 0.0, False), (centre, 1.0, True)):
        p = Prepared(None, pre, np.ones(rad.pixels.shape, bool), "given", lesion, "given")
        r = reach(ctx, p, x)
        assert (r["lesion_in_reach"], r["lesion_reachable"]) == (share, ok)
        assert 0.3 < r["lungs_in_reach"] < 0.9  # the whole image as "lungs": the crop's middle only


def test_deletion_below_insertion_for_gradcam(scored):
    g = scored["methods"]["gradcam"]
    assert g["deletion_auc"] < g["insertion_auc"]
    assert g["deletion_auc"] < g["deletion_auc_random"]


@pytest.fixture(scope="module")
def cli_report(demo_ckpt, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("loc_cli")
    root = write_phantom_dataset(out / "ph", 6, seed=320_000, size=SIZE, abnormal_fraction=0.5)
    rc = main(["localize", "--checkpoint", demo_ckpt, "--data", str(root), "--all",
               "--methods", "channel-lungs,gradcam++,occlusion,integrated-gradients",
               "--tolerance-px", "10", "--json", str(out / "loc.json"), "--figures", str(out / "figs"),
               "--sanity-images", "1", "--ig-steps", "4", "--occlusion-window", "64", "--batch-size", "64",
               "--faithfulness-steps", "4",
               "--no-progress"])
    assert rc == 0

    def no_nan(c: str) -> None:
        raise AssertionError(f"non-strict JSON constant {c}")

    return json.loads((out / "loc.json").read_text(), parse_constant=no_nan), out


def test_cli_writes_the_documented_keys(cli_report):
    r, out = cli_report
    methods = ["channel-lungs", "gradcam++", "occlusion", "integrated-gradients"]
    assert r["n_images"] == 3 and r["tolerance_px"] == 10
    assert list(r["methods"]) == methods
    for m in methods:
        s = r["methods"][m]
        for k in ("pointing_game", "pointing_ci", "energy_inside", "miou", "deletion_auc", "insertion_auc",
                  "seconds_per_image", "called_abnormal"):
            assert k in s, (m, k)
        assert len(s["pointing_ci"]) == 2 and 0 <= s["pointing_game"] <= 1
        assert isinstance(r["sanity"][m]["passes"], bool)
        assert isinstance(r["sanity"][m]["spearman_randomised"], float)
        assert isinstance(r["sanity"][m]["ssim_randomised"], float)
    b = r["baselines"]
    assert {"uniform_lungs", "uniform_image", "population_prior", "untrained"} <= set(b)
    assert list(b["untrained"]) == methods and "pointing_game" in b["population_prior"]
    assert all(row["lesion_source"] == "lesion_mask" for row in r["per_image"])
    figs = sorted(p.name for p in (out / "figs").iterdir())
    assert len([f for f in figs if f.endswith("_methods.png")]) == 3
    assert any(f.endswith("_randomisation_cascade.png") for f in figs)


def test_bad_input_gives_one_sentence(demo_ckpt, tmp_path, capsys):
    root = write_phantom_dataset(tmp_path / "normal", 2, seed=330_000, size=128, abnormal_fraction=0.0)
    assert main(["localize", "--checkpoint", demo_ckpt, "--data", str(root), "--all", "--no-progress",
                 "--methods", "gradcam,bogus"]) == 2
    assert "Unknown saliency method bogus" in capsys.readouterr().err
    assert main(["localize", "--checkpoint", demo_ckpt, "--data", str(root), "--all", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no abnormal" in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.realdata
def test_real_lesion_annotations(nlm_root, demo_ckpt, tmp_path):
    """Two Shenzhen TB images, scored against the lesion masks and against the release JSON."""
    china = nlm_root / "ChinaSet_AllFiles"
    for source in ("auto", "json"):
        r = localize(demo_ckpt, [str(china)], use_all=True, methods=["gradcam"], limit=2, sanity_images=0,
                     faithfulness=False, untrained=False, lesion_source=source)
        assert r["n_images"] == 2
        assert {row["lesion_source"] for row in r["per_image"]} == {"lesion_mask" if source == "auto" else "via-json"}
        assert all(0 < row["lesion_fraction"] < 0.5 for row in r["per_image"])
        assert r["baselines"]["uniform_lungs"]["pointing_game"] > 0
