"""The folder export's API (issue 15): `batch.run(images, ExportOptions, progress, cancel)` on phantom
images, and the one sidecar builder: the app's overlay export and `cxr-studio export` write the same keys."""
from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest

from cxr_studio import batch
from cxr_studio.batch import BatchResult, ExportOptions, UsageError, export_one, run
from cxr_studio.core.imaging.io import read_image
from cxr_studio.core.pipeline import preprocess
from cxr_studio.core.inspect.views import compute_forward, compute_heatmap
from cxr_studio.core.models.checkpoint import load_checkpoint
from cxr_studio.core.phantoms.phantom import write_phantom_dataset
from cxr_studio.core.render.export import export_view, file_sha256
from cxr_studio.core.render.sidecar import SIDECAR_KEYS
from cxr_studio.core.runtime.session import Session

from test_hostile_batch import SPEC, ckpt  # noqa: F401 - the same tiny checkpoint fixture (tests/core is on sys.path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 4, seed=3, size=128) / "CXR_png"


def statuses(summary: Path) -> list[str]:
    with open(summary, newline="") as f:
        return [r["status"] for r in csv.DictReader(f)]


def test_run_reports_progress_once_per_image(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    result = run([folder], ExportOptions(out=tmp_path / "o", checkpoint=str(ckpt)),
                 progress=lambda f, m: seen.append((f, m)))
    assert isinstance(result, BatchResult)
    assert (result.total, result.exported, result.failed, result.cancelled) == (4, 4, 0, 0)
    assert result.exit_code == 0 and result.summary == tmp_path / "o" / "summary.csv"
    assert [f for f, _ in seen] == [0.0, 0.25, 0.5, 0.75, 1.0]  # before each image, then the end
    assert [m.rsplit(" ", 1)[-1] for _, m in seen[:4]] == ["(1/4)", "(2/4)", "(3/4)", "(4/4)"]
    assert statuses(result.summary) == ["ok"] * 4
    assert len(list((tmp_path / "o").glob("*.png"))) == 4


def test_run_cancel_stops_after_the_current_image(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    stop = threading.Event()

    def progress(fraction: float, message: str) -> None:
        if "(2/4)" in message:  # the second image has started: it finishes, the rest do not
            stop.set()

    out = tmp_path / "o"
    result = run([folder], ExportOptions(out=out, checkpoint=str(ckpt)), progress=progress, cancel=stop)
    assert (result.exported, result.cancelled, result.failures) == (2, 2, [])
    assert result.exit_code == 1  # as the command line: not everything was exported
    assert statuses(out / "summary.csv") == ["ok", "ok", "cancelled", "cancelled"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in sorted(folder.glob("*.png"))[:2])


def test_run_uses_an_opened_model_and_refuses_bad_options_before_any_work(ckpt: Path, folder: Path,
                                                                           tmp_path: Path, monkeypatch) -> None:
    loaded = load_checkpoint(ckpt)
    from cxr_studio.core.models import importers

    monkeypatch.setattr(importers, "open_model", lambda *a, **k: pytest.fail("the model was opened again"))
    one = sorted(folder.glob("*.png"))[0]
    result = run([one], ExportOptions(out=tmp_path / "o", loaded=loaded, method="gradcam", threshold=0.1))
    assert result.exit_code == 0 and result.options.checkpoint == str(loaded.path)
    side = json.loads((tmp_path / "o" / f"{one.stem}.json").read_text())
    assert side["checkpoint_sha256"] == file_sha256(ckpt) and side["method"] == "gradcam" and side["channel"] is None
    for bad, message in ((dict(threshold=2.0), "between 0 and 1"), (dict(method="lime"), "Unknown method"),
                         (dict(channel=-1), "channel"), (dict(layer="conv99"), "conv99")):
        with pytest.raises(UsageError, match=message):
            run([one], ExportOptions(out=tmp_path / "bad", loaded=loaded, **bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="No images found"):
        run([tmp_path / "empty"], ExportOptions(out=tmp_path / "bad", loaded=loaded))
    assert not (tmp_path / "bad").exists()


def test_main_is_a_thin_wrapper_of_run(ckpt: Path, folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    calls: list[tuple] = []
    real = batch.run

    def spy(images, options, progress=None, cancel=None):  # noqa: ANN001
        calls.append((images, options))
        return real(images, options, progress=progress, cancel=cancel)

    monkeypatch.setattr(batch, "run", spy)
    out = tmp_path / "o"
    code = batch.main(["--checkpoint", str(ckpt), "--out", str(out), "--layer", "conv4", "--channel", "1",
                       "--opacity", "0.7", "--no-progress", str(folder)])
    assert code == 0 and len(calls) == 1
    images, options = calls[0]
    assert images == [str(folder)]
    assert (options.layer, options.channel, options.opacity, options.progress_bar) == ("conv4", 1, 0.7, False)
    assert f"Exported 4 of 4 image(s) to {out}; 0 failed. Summary: {out / 'summary.csv'}" in capsys.readouterr().out


def test_app_and_command_line_sidecars_have_the_same_keys(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    """The GUI path (Session.render_settings -> export_view) and the CLI path (export_one) for the same
    image, model and settings: one builder, the same keys and the same values where both know them."""
    path = sorted(folder.glob("*.png"))[1]
    loaded = load_checkpoint(ckpt)
    s = Session()
    s.add_model("tiny", loaded)
    radiograph = read_image(path)
    pre = preprocess(radiograph, loaded.spec)
    s.set_image(radiograph)
    s.set_preprocessed(pre)
    layer = s.layer
    fwd = compute_forward(loaded, pre, [layer])
    s.set_forward("tiny", fwd)
    hm = compute_heatmap(loaded, pre, fwd, layer, "strongest")
    s.set_heatmap(hm)
    s.threshold, s.opacity = 0.25, 0.6
    gui = export_view(tmp_path / "gui", radiograph.pixels, hm.map_original, s.render_settings())
    options = ExportOptions(out=tmp_path / "cli", checkpoint=str(ckpt), threshold=0.25, opacity=0.6)
    (tmp_path / "cli").mkdir()
    export_one(path, loaded, loaded.spec, layer, options)
    a = json.loads(gui.json.read_text())
    b = json.loads((tmp_path / "cli" / f"{path.stem}.json").read_text())
    assert set(a) == set(b) and set(SIDECAR_KEYS) <= set(a)
    for key in ("image_path", "checkpoint_path", "checkpoint_sha256", "arch", "class_names", "probabilities",
                "layer", "channel", "method", "threshold", "opacity", "colormap", "scale", "ranking", "spec",
                "geometry", "segmentation_used", "warnings", "image_sha256", "npy_sha256", "png_sha256"):
        assert a[key] == b[key], key
    assert (a["model_id"], b["model_id"], a["region"], b["region"]) == ("tiny", None, None, None)
