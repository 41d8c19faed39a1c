"""`cxr-studio export` batch CLI on phantoms with a tiny checkpoint, plus views.compute_* on it."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_studio.batch import main
from cxr_studio.cli import main as cli_main
from cxr_studio.core.render import export as ex
from cxr_studio.core.models.checkpoint import load_checkpoint, save_checkpoint
from cxr_studio.core.imaging.io import read_image, write_png
from cxr_studio.core.models import build_model
from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.pipeline import PreprocessSpec, preprocess
from cxr_studio.core.inspect.views import ViewError, compute_forward, compute_heatmap

INPUT = 91
SPEC = PreprocessSpec.preset("fast").replace(input_size=INPUT, intermediate_size=128)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    kwargs = {"width": 0.1, "fc_width": 16, "input_size": INPUT}
    model = build_model("cxrnet_narrow", **kwargs)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, model, arch="cxrnet_narrow", arch_kwargs=kwargs, preprocess=SPEC)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for seed in range(3):
        write_png(d / f"phantom_{seed}.png", make_phantom(seed, size=160).image)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # truncated
    (d / "notes.txt").write_text("not an image")  # unsupported suffix: not picked up from folders
    return d


def read_summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_batch_exports_folder_and_reports_bad_file(ckpt: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["--checkpoint", str(ckpt), "--out", str(out), "--threshold", "0.2", "--no-progress", str(images)])
    assert code == 1
    err = capsys.readouterr().err
    bad_lines = [ln for ln in err.splitlines() if "corrupt.png" in ln]
    assert len(bad_lines) == 1  # one line for the bad image, no traceback
    assert "Traceback" not in err
    for seed in range(3):
        for suf in (".png", ".npy", ".json"):
            assert (out / f"phantom_{seed}{suf}").is_file()
    assert not (out / "corrupt.png").exists()
    rows = read_summary(out / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "ok", "ok", "ok"]  # natural order: corrupt first
    ok = rows[1]
    assert ok["channel"].isdigit() and ok["layer"] == "relu5"  # deepest conv's ReLU
    assert abs(float(ok["p_normal"]) + float(ok["p_abnormal"]) - 1) < 1e-5
    assert rows[0]["error"]
    # the sidecar re-renders the PNG byte for byte from the original image
    side = json.loads((out / "phantom_0.json").read_text())
    assert side["threshold"] == 0.2 and side["method"] == "activation" and side["spec"]["input_size"] == INPUT
    assert side["checkpoint_sha256"] == ex.file_sha256(ckpt)
    assert ex.encode_png(ex.rerender(out / "phantom_0.json")) == (out / "phantom_0.png").read_bytes()


def test_batch_gradcam_all_ok_and_no_overwrite(ckpt: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--method", "gradcam++",
            "--colormap", "inferno", "--layer", "conv4", "--no-progress", str(images / "phantom_1.png")]
    assert cli_main(args) == 0
    assert cli_main(args) == 0  # second run picks a free name instead of overwriting
    assert (out / "phantom_1.png").is_file() and (out / "phantom_1_1.png").is_file()
    assert (out / "summary.csv").is_file() and (out / "summary_1.csv").is_file()
    side = json.loads((out / "phantom_1.json").read_text())
    assert side["method"] == "gradcam++" and side["layer"] == "conv4" and side["channel"] is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "2"], "between 0 and 1"),
        (["--layer", "conv99"], "conv99"),
        (["--layer", "fc7"], "fully connected"),
        (["--device", "cuda:7"], "cuda"),
        (["--channel", "x"], "strongest"),
        (["--colormap", "hot"], "invalid choice"),
        (["--ranking", "lungs"], "needs a lung mask"),  # the checkpoint's spec has no segmentation
        (["--class-index", "5", "--method", "gradcam"], "out of range"),
    ],
)
def test_batch_usage_errors_exit_2(ckpt: Path, images: Path, tmp_path: Path, capsys, extra, message) -> None:
    code = main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "u"), *extra, str(images)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "u").exists()


def test_batch_bad_checkpoint_is_one_line(images: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["--checkpoint", str(bad), "--out", str(tmp_path / "o"), str(images)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0]
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"), str(images)]) == 2
    assert main(["--help"]) == 0
    assert "--checkpoint" in capsys.readouterr().out


def test_views_activation_and_gradcam(ckpt: Path, images: Path) -> None:
    loaded = load_checkpoint(ckpt)
    pre = preprocess(read_image(images / "phantom_2.png"), loaded.spec)
    fwd = compute_forward(loaded, pre)
    assert "relu5" in fwd.activations and fwd.probabilities.shape == (2,)
    hm = compute_heatmap(loaded, pre, fwd, "relu5", "strongest", ranking="mean")
    act = fwd.activations["relu5"]
    means = act.reshape(act.shape[0], -1).mean(axis=1)
    assert hm.channel == int(np.argmax(means)) == hm.ranking[0][0]
    from cxr_studio.core.models.placement import layer_placement, place_on_input
    from cxr_studio.core.inspect.saliency import channel_map

    expected = place_on_input(channel_map(act, hm.channel), layer_placement(loaded.model, "relu5"), INPUT)
    assert hm.map_input.shape == (INPUT, INPUT) and np.array_equal(hm.map_input, expected)
    assert hm.map_original.shape == pre.original.shape
    assert 0.0 <= hm.map_original.min() and hm.map_original.max() <= 1.0
    fixed = compute_heatmap(loaded, pre, None, "relu5", 0, scale="layer")  # runs the layer itself
    assert fixed.channel == 0 and fixed.map_input.max() <= 1.0
    cam = compute_heatmap(loaded, pre, fwd, "conv5", method="gradcam", class_index=0)
    assert cam.map_input.shape == (INPUT, INPUT) and cam.channel is None and cam.class_index == 0
    with pytest.raises(ViewError, match="fully connected"):
        compute_heatmap(loaded, pre, fwd, "fc8", 0)
    with pytest.raises(ViewError, match="Unknown heatmap method"):
        compute_heatmap(loaded, pre, fwd, "relu5", 0, method="lime")


def test_batch_progress_and_cancel(ckpt: Path, images: Path, tmp_path: Path) -> None:
    import threading

    stop = threading.Event()
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if len(seen) == 2:  # the second image has started: stop after it
            stop.set()

    out = tmp_path / "c"
    code = main(["--checkpoint", str(ckpt), "--out", str(out), "--no-progress", str(images)],
                cancel=stop, progress=progress)
    assert code == 1
    rows = read_summary(out / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "ok", "cancelled", "cancelled"]
    assert seen == [0.0, 0.25, 1.0]


@pytest.mark.realdata
def test_batch_on_real_radiographs(ckpt: Path, nlm_root: Path, tmp_path: Path) -> None:
    """Real NLM images (read in place, never copied): heuristic lung crop, full-size overlays."""
    files = [nlm_root / "MontgomerySet" / "CXR_png" / "MCUCXR_0001_0.png",
             nlm_root / "ChinaSet_AllFiles" / "CXR_png" / "CHNCXR_0007_0.png"]  # 1018 x 1024
    files = [f for f in files if f.is_file()]
    if not files:
        pytest.skip("the chosen NLM files are not present")
    out = tmp_path / "real"
    code = main(["--checkpoint", str(ckpt), "--out", str(out), "--segmentation", "heuristic",
                 "--ranking", "lungs", "--no-progress", *map(str, files)])
    assert code == 0
    for f in files:
        png = out / f"{f.stem}.png"
        assert read_image(png).shape == read_image(f).shape  # the radiograph's full resolution
        side = json.loads((out / f"{f.stem}.json").read_text())
        assert side["spec"]["segmentation"] == "heuristic" and side["ranking"] == "lungs"
        assert side["segmentation_used"] == "heuristic"
        assert ex.encode_png(ex.rerender(out / f"{f.stem}.json")) == png.read_bytes()


def test_batch_same_names_never_collide(ckpt: Path, tmp_path: Path) -> None:
    for sub, seed in (("x", 4), ("y", 5)):
        write_png(tmp_path / sub / "img.png", make_phantom(seed, size=128).image)
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--overwrite", "--no-progress",
            str(tmp_path / "x"), str(tmp_path / "y")]
    assert main(args) == 0
    a, b = (np.load(out / n) for n in ("img.npy", "img_1.npy"))
    assert a.shape == b.shape == (128, 128) and not np.array_equal(a, b)
    assert main(args) == 0  # --overwrite: the same two names again, nothing new
    assert sorted(p.name for p in out.glob("img*.png")) == ["img.png", "img_1.png"]
    assert sorted(p.name for p in out.glob("summary*")) == ["summary.csv"]


def test_views_region_ranking(ckpt: Path, images: Path) -> None:
    from cxr_studio.core.inspect.activations import Region

    loaded = load_checkpoint(ckpt)
    pre = preprocess(read_image(images / "phantom_0.png"), loaded.spec)
    fwd = compute_forward(loaded, pre, ["relu5"])
    with pytest.raises(ValueError, match="region"):  # "strongest" in a region needs the region
        compute_heatmap(loaded, pre, fwd, "relu5", "strongest", ranking="region")
    hm = compute_heatmap(loaded, pre, fwd, "relu5", 2, ranking="region")  # explicit channel: fine
    assert hm.channel == 2 and hm.ranking == []
    region = Region("rect", [(20, 30), (90, 100)])
    hm = compute_heatmap(loaded, pre, fwd, "relu5", "strongest", ranking="region", region=region)
    assert hm.channel == hm.ranking[0][0] and len(hm.ranking) == fwd.activations["relu5"].shape[0]


def test_summary_calls_against_the_models_operating_point(images: Path, tmp_path: Path) -> None:
    """summary.csv's `predicted` reads a two-class model's probability against the operating
    threshold its checkpoint declares (as the app's verdict and cohort table do), not the argmax."""
    from cxr_studio.core.models.shipped import predicted_class

    torch.manual_seed(0)
    kwargs = {"width": 0.1, "fc_width": 16, "input_size": INPUT}
    model = build_model("cxrnet_narrow", **kwargs)
    plain = save_checkpoint(tmp_path / "plain.pt", model, arch="cxrnet_narrow", arch_kwargs=kwargs, preprocess=SPEC)
    files = [str(images / f"phantom_{s}.png") for s in range(3)]
    assert main(["--checkpoint", str(plain), "--out", str(tmp_path / "a"), "--no-progress", *files]) == 0
    rows = read_summary(tmp_path / "a" / "summary.csv")
    p1 = [float(r["p_abnormal"]) for r in rows]
    assert [r["predicted"] for r in rows] == [("abnormal" if p > 0.5 else "normal") for p in p1]
    assert {r["operating_point"] for r in rows} == {""}  # no threshold declared: the argmax
    # a threshold that flips the call of every image on one side of 0.5
    t = (max(p1) + 1.0) / 2 if min(p1) > 0.5 else min(p1) / 2
    assert any((p >= t) != (p > 0.5) for p in p1)
    op = save_checkpoint(tmp_path / "op.pt", model, arch="cxrnet_narrow", arch_kwargs=kwargs, preprocess=SPEC,
                         provenance={"operating_point": {"threshold": t, "chosen_on": "test"}})
    assert main(["--checkpoint", str(op), "--out", str(tmp_path / "b"), "--no-progress", *files]) == 0
    rows = read_summary(tmp_path / "b" / "summary.csv")
    assert [r["predicted"] for r in rows] == [("abnormal" if p >= t else "normal") for p in p1]
    assert {float(r["operating_point"]) for r in rows} == {round(t, 4)}
    # two sigmoid outputs are two findings, not a softmax pair: the threshold is not read, nor listed
    model.multi_label = True
    ml = save_checkpoint(tmp_path / "ml.pt", model, arch="cxrnet_narrow", arch_kwargs=kwargs, preprocess=SPEC,
                         provenance={"operating_point": {"threshold": t, "chosen_on": "test"}})
    assert main(["--checkpoint", str(ml), "--out", str(tmp_path / "c"), "--no-progress", *files]) == 0
    rows = read_summary(tmp_path / "c" / "summary.csv")
    assert {r["operating_point"] for r in rows} == {""}
    assert all(r["predicted"] == max(("normal", "abnormal"), key=lambda c: float(r[f"p_{c}"])) for r in rows)
    assert predicted_class([0.2, 0.5, 0.3], 0.1) == 1  # more than two classes: always the argmax
    assert predicted_class([0.6, 0.4], 0.3, multi_label=True) == 0 and predicted_class([], 0.5) is None


def test_export_defaults_draw_the_apps_default_look(ckpt: Path, images: Path, tmp_path: Path) -> None:
    """Without --threshold / --opacity an exported figure has the app's default look (weak map values
    transparent), so a figure from the command line matches what the window shows by default."""
    from cxr_studio.batch_options import ExportOptions, build_parser
    from cxr_studio.core.runtime.session import Session

    app = Session()
    args = build_parser().parse_args(["--out", str(tmp_path), "x.png"])
    assert 0 < args.threshold == ExportOptions(out=tmp_path).threshold == app.threshold
    assert args.opacity == ExportOptions(out=tmp_path).opacity == app.opacity
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress",
                 str(images / "phantom_0.png")]) == 0
    assert json.loads((tmp_path / "o" / "phantom_0.json").read_text())["threshold"] == app.threshold
