"""``cxr-studio-train lung-check`` on a small phantom set with the shipped demo model (fresh seeds
300000+, the demo model was trained on seeds < 100000), plus a short real-data run on 4 Shenzhen
abnormal images when the NLM data is present."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_studio.core.phantoms.phantom import write_phantom_dataset
from cxr_studio.core.resources import DEMO_MODEL, find_resource
from cxr_studio.training.cli import main
from cxr_studio.training.data import read_mask, scan_roots, stratified_split, write_split

N_PHANTOMS, SIZE, SEED = 10, 256, 300_000


@pytest.fixture(scope="module")
def demo_ckpt() -> str:
    path = find_resource(DEMO_MODEL)
    assert path is not None, "resources/models/cxrnet-demo.pt is missing"
    return str(path)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("lc") / "ph", N_PHANTOMS, seed=SEED, size=SIZE)


@pytest.fixture(scope="module")
def result(demo_ckpt, phantoms, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lc_out")
    rc = main(["lung-check", "--checkpoint", demo_ckpt, "--data", str(phantoms), "--all", "--json",
               str(out / "lc.json"), "--figures", str(out / "figs"), "--max-figures", "3", "--no-progress"])
    assert rc == 0
    d = json.loads((out / "lc.json").read_text())
    d["figs_dir"] = out / "figs"
    return d


def test_one_row_per_abnormal_image(result, phantoms) -> None:
    abnormal = sorted(s.id for s in scan_roots([phantoms]) if s.label == 1)
    rows = result["images_scored"]
    assert sorted(r["id"] for r in rows) == abnormal and len(abnormal) == N_PHANTOMS // 2
    assert result["summary"]["n_abnormal"] == len(abnormal)
    assert all(r["mask_source"] == "dataset" for r in rows)
    assert result["summary"]["layer"] == "relu5"


def test_rates_and_baselines_are_sane(result) -> None:
    s = result["summary"]
    for key in ("channel_hit_rate", "gradcam_hit_rate"):
        assert 0.0 <= s[key] <= 1.0
    assert 0.0 < s["chance_fov"] < 1.0 and 0.0 < s["chance_cells"] < 1.0
    lo, hi = s["channel_hit_rate_ci95"]
    assert lo <= s["channel_hit_rate"] <= hi
    # the demo model's strongest channel sits on lesions, and lesions lie inside the lungs
    assert s["channel_hit_rate"] >= s["chance_fov"], s
    rows = result["images_scored"]
    assert s["channel_hit_rate"] == pytest.approx(np.mean([r["hit"] for r in rows]))
    assert s["chance_fov"] == pytest.approx(np.mean([r["lung_fraction"] for r in rows]))
    called = [r for r in rows if r["prob_abnormal"] >= 0.5]
    assert s["n_called_abnormal"] == len(called) > 0
    assert s["channel_hit_rate_called_abnormal"] == pytest.approx(np.mean([r["hit"] for r in called]))


def test_hit_means_the_peak_is_on_the_dataset_mask(result, phantoms) -> None:
    by_id = {s.id: s for s in scan_roots([phantoms])}
    for r in result["images_scored"]:
        mask = read_mask(by_id[r["id"]].mask_paths)
        for xy, hit in ((r["peak_xy"], r["hit"]), (r["cam_peak_xy"], r["cam_hit"])):
            x, y = np.round(np.asarray(xy)).astype(int)
            assert 0 <= x < SIZE and 0 <= y < SIZE
            assert bool(mask[y, x]) == hit, r


def test_figures_written_and_coloured(result) -> None:
    figs = sorted(result["figs_dir"].glob("*.png"))
    assert len(figs) == 3 == result["summary"]["figures"]
    rows = {Path(r["path"]).stem: r for r in result["images_scored"]}
    for f in figs:
        stem, ch = f.stem.rsplit("_ch", 1)
        assert int(ch) == rows[stem]["channel"]
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        assert bgr is not None and bgr.shape == (SIZE, SIZE, 3)
        b, g, r = (bgr[..., i].astype(int) for i in range(3))
        marker = (r > 200) & (b > 200) & (g < 80)  # the magenta peak marker
        assert marker.any()
        # jet colour (a gray radiograph has r == g == b): red/yellow or blue/cyan, not the marker
        jet = (np.abs(r - b) > 40) & ~marker
        assert jet.sum() > 10, f
    assert not list(result["figs_dir"].glob(".*.tmp"))


def test_split_file_selects_the_test_part(demo_ckpt, phantoms, tmp_path) -> None:
    samples = scan_roots([phantoms])
    split = stratified_split(samples, [0.4, 0.2, 0.4], seed=1)
    write_split(tmp_path / "split.json", split, 1, [0.4, 0.2, 0.4])
    rc = main(["lung-check", "--checkpoint", demo_ckpt, "--data", str(phantoms), "--split-file",
               str(tmp_path / "split.json"), "--json", str(tmp_path / "lc.json"), "--no-progress",
               "--dilation-px", "400", "--untrained-control"])
    assert rc == 0
    d = json.loads((tmp_path / "lc.json").read_text())
    want = sorted(i for i in split["test"] if i.endswith("_1.png"))
    assert sorted(r["id"] for r in d["images_scored"]) == want and want
    # a mask grown past the image edges covers every pixel: every peak hits, and so does chance
    assert d["summary"]["channel_hit_rate"] == 1.0 == d["summary"]["chance_fov"]
    ctl = d["summary"]["untrained_control"]
    assert ctl["seed"] == 0 and ctl["channel_hit_rate"] == 1.0 == ctl["gradcam_hit_rate"]
    assert all(isinstance(r["control_channel"], int) for r in d["images_scored"])


@pytest.mark.parametrize("case", ["missing checkpoint", "empty data root", "unknown layer", "fc layer"])
def test_bad_input_is_one_line_and_exit_2(case, demo_ckpt, phantoms, tmp_path, capsys) -> None:
    ckpt, data, extra = demo_ckpt, str(phantoms), []
    if case == "missing checkpoint":
        ckpt = str(tmp_path / "nope.pt")
    elif case == "empty data root":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    else:
        extra = ["--layer", "nope" if case == "unknown layer" else "fc7"]
    rc = main(["lung-check", "--checkpoint", ckpt, "--data", data, "--all", "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "lung-check" in err


def test_real_shenzhen_abnormal_images_use_dataset_masks(nlm_root, demo_ckpt, tmp_path) -> None:
    china = [s for s in scan_roots([nlm_root]) if s.id.startswith("ChinaSet") and s.label == 1 and s.mask_paths]
    ids = sorted(s.id for s in china)[:4]
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": [], "test": ids}))
    rc = main(["lung-check", "--checkpoint", demo_ckpt, "--data", str(nlm_root), "--split-file",
               str(tmp_path / "split.json"), "--json", str(tmp_path / "lc.json"), "--no-progress"])
    assert rc == 0
    d = json.loads((tmp_path / "lc.json").read_text())
    assert [r["id"] for r in d["images_scored"]] == ids
    assert d["summary"]["mask_sources"] == {"dataset": 4}
    assert 0.0 < d["summary"]["chance_fov"] < 1.0
