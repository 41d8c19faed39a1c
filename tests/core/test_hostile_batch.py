"""Issue 16, hostile input against `cxr-studio export` and the readers: one test per case.

Each case stands for a rule: a bad input is one sentence and the rest go on (1), a file that
contradicts its own header is not read silently (2), non-finite outputs are named and JSON is
strict (5), output paths are checked before any work (6), Ctrl-C keeps what was done (7), nothing is
overwritten without --overwrite even under a race (8), plus the "also seen" list.
"""
from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_studio import batch
from cxr_studio.batch import main
from cxr_studio.core.render import export as ex
from cxr_studio.core.atomic import remove_stale_temps, strict_json, temp_name, write_text_exclusive
from cxr_studio.core.models.checkpoint import save_checkpoint
from cxr_studio.core.imaging.io import read_image, write_png
from cxr_studio.core.models import build_model
from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.pipeline import PreprocessSpec
from dicom_factory import gradient, make_dicom

INPUT = 91
SPEC = PreprocessSpec.preset("fast").replace(input_size=INPUT, intermediate_size=128)
KW = {"width": 0.1, "fc_width": 16, "input_size": INPUT}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, build_model("cxrnet_narrow", **KW), arch="cxrnet_narrow", arch_kwargs=KW,
                           preprocess=SPEC)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for seed in range(3):
        write_png(d / f"phantom_{seed}.png", make_phantom(seed, size=160).image)
    return d


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def strict_load(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# -- case 1: a symbolic link loop among the inputs ------------------------------------------------
def test_symlink_loop_is_one_sentence_and_the_rest_export(ckpt: Path, images: Path, tmp_path: Path,
                                                          capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    good = images / "phantom_0.png"
    out = tmp_path / "o"
    code = main([str(a), str(good), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "symbolic link loop" in err and "Traceback" not in err
    assert (out / "phantom_0.png").is_file()
    assert {r["file"]: r["status"] for r in rows(out / "summary.csv")} == {str(a): "failed", str(good): "ok"}


def test_loop_inside_a_scanned_folder_is_reported(ckpt: Path, images: Path, tmp_path: Path, capsys) -> None:
    d = tmp_path / "folder"
    d.mkdir()
    write_png(d / "good.png", make_phantom(1, size=160).image)
    (d / "x.png").symlink_to(d / "y.png")
    (d / "y.png").symlink_to(d / "x.png")
    (d / "gone.png").symlink_to(tmp_path / "missing.png")
    out = tmp_path / "o"
    assert main([str(d), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "x.png: skipped: it is a symbolic link loop" in err and "y.png: skipped" in err
    assert "gone.png: skipped: it is a broken symbolic link" in err
    status = {Path(r["file"]).name: r["status"] for r in rows(out / "summary.csv")}
    assert status == {"good.png": "ok", "x.png": "skipped", "y.png": "skipped", "gone.png": "skipped"}


# -- case 2: a DICOM whose BitsStored disagrees with its data -------------------------------------
def test_dicom_values_beyond_bits_stored_use_the_real_range(tmp_path: Path) -> None:
    import pydicom

    truth = gradient(64, 48, 4095)
    p = make_dicom(tmp_path / "bs.dcm", truth, bits_stored=4)
    ds = pydicom.dcmread(p)
    ds.HighBit = 11  # as in the hostile file: BitsStored 4, HighBit 11, real 12-bit values
    ds.save_as(p)
    r = read_image(p)
    assert len(np.unique(r.pixels)) > 1000  # not 16 grey levels
    assert np.corrcoef(r.pixels.ravel(), truth.ravel().astype(float))[0, 1] > 0.999
    (warning,) = r.meta["warnings"]
    assert "BitsStored=4" in warning and "12 bits" in warning
    honest = read_image(make_dicom(tmp_path / "ok.dcm", truth, bits_stored=12))
    assert "warnings" not in honest.meta and np.allclose(honest.pixels, r.pixels)


def test_dicom_bits_warning_reaches_the_export(ckpt: Path, tmp_path: Path, capsys) -> None:
    import pydicom

    img = (make_phantom(2, size=160).image * 4095).astype(np.uint16)
    p = make_dicom(tmp_path / "bs.dcm", img, bits_stored=4)
    ds = pydicom.dcmread(p)
    ds.HighBit = 11
    ds.save_as(p)
    out = tmp_path / "o"
    assert main([str(p), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    assert "BitsStored=4" in capsys.readouterr().err
    side = strict_load((out / "bs.json").read_text())
    assert any("BitsStored=4" in w for w in side["warnings"])


# -- case 5 (export half): non-finite outputs are named; JSON is strict ----------------------------
def test_non_finite_model_output_is_named(tmp_path: Path, images: Path, capsys) -> None:
    model = build_model("cxrnet_narrow", **KW)
    with torch.no_grad():  # finite weights whose products overflow float32: the output is NaN
        for prm in model.parameters():
            prm.fill_(1e30)
    ck = save_checkpoint(tmp_path / "overflow.pt", model, arch="cxrnet_narrow", arch_kwargs=KW, preprocess=SPEC)
    out = tmp_path / "o"
    code = main([str(images / "phantom_0.png"), "--checkpoint", str(ck), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "phantom_0.png: the model's output is not a finite number" in err
    assert "cannot be stored as JSON" not in err
    assert not list(out.glob("phantom_0*"))
    assert rows(out / "summary.csv")[0]["status"] == "failed"


def test_export_names_the_non_finite_setting(tmp_path: Path) -> None:
    px = make_phantom(0, size=64).image
    settings = {"colormap": "jet", "threshold": 0.0, "opacity": 0.5, "probabilities": [float("nan"), 0.5]}
    with pytest.raises(ex.ExportError, match="not finite numbers .* in probabilities"):
        ex.export_view(tmp_path / "v", px, np.zeros_like(px), settings)
    assert list(tmp_path.iterdir()) == []


def test_strict_json_turns_nan_into_null() -> None:
    text = strict_json({"auc": float("nan"), "x": [1.0, float("inf"), np.float32("nan")], "n": np.int64(3)})
    assert strict_load(text) == {"auc": None, "x": [1.0, None, None], "n": 3}


# -- case 6: an output folder that cannot be written ---------------------------------------------
@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A folder no file can be created in: chmod 555 for a normal user; /proc for root (permission
    bits do not stop root, and /proc takes no new files)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if not Path("/proc/self").exists():
        pytest.skip("no unwritable folder can be made here (root without /proc)")
    yield Path("/proc")


def test_unwritable_output_folder_is_refused_before_any_work(ckpt: Path, images: Path, unwritable: Path,
                                                             monkeypatch, capsys) -> None:
    calls = []
    monkeypatch.setattr(batch, "export_one", lambda *a, **k: calls.append(a))
    code = main([str(images), "--checkpoint", str(ckpt), "--out", str(unwritable), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and calls == []
    assert "Cannot write into the output folder" in err and "Traceback" not in err and err.count("\n") == 1


# -- case 7: Ctrl-C during a batch export -----------------------------------------------------------
def test_ctrl_c_writes_the_summary_and_says_how_to_continue(ckpt: Path, images: Path, tmp_path: Path,
                                                            capsys) -> None:
    out = tmp_path / "o"

    def interrupt_second(fraction: float, message: str) -> None:
        if "(2/3)" in message:
            raise KeyboardInterrupt

    args = [str(images), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    assert main(args, progress=interrupt_second) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--skip-existing" in err
    assert [r["status"] for r in rows(out / "summary.csv")] == ["ok", "interrupted", "interrupted"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["summary.csv", "phantom_0.png", "phantom_0.npy",
                                                            "phantom_0.json"])
    assert main(args + ["--skip-existing"]) == 0
    second = rows(out / "summary_1.csv")
    assert [r["status"] for r in second] == ["done earlier", "ok", "ok"]
    assert not (out / "phantom_0_1.png").exists()  # not exported twice


# -- case 8: two exports into one folder at once -------------------------------------------------
def test_a_file_that_appears_mid_export_is_never_overwritten(ckpt: Path, images: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    """The other process writes phantom_0.* after our existence check and before our publish."""
    out = tmp_path / "o"
    out.mkdir()
    real = ex.encode_png
    state = {"raced": False}

    def racing_encode(rgb: np.ndarray) -> bytes:
        if not state["raced"]:
            state["raced"] = True
            for suf in (".png", ".npy", ".json"):
                (out / f"phantom_0{suf}").write_bytes(b"the other export")
        return real(rgb)

    monkeypatch.setattr(ex, "encode_png", racing_encode)
    args = [str(images / "phantom_0.png"), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    for suf in (".png", ".npy", ".json"):
        assert (out / f"phantom_0{suf}").read_bytes() == b"the other export"
        assert (out / f"phantom_0_1{suf}").stat().st_size > 100
    assert rows(out / "summary.csv")[0]["output"] == "phantom_0_1.png"


def test_exclusive_write_has_one_winner_under_a_real_race(tmp_path: Path) -> None:
    dest, go, wins, losses = tmp_path / "summary.csv", threading.Barrier(8), [], []

    def contend(i: int) -> None:
        go.wait()
        try:
            write_text_exclusive(dest, f"writer {i}\n")
            wins.append(i)
        except FileExistsError:
            losses.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert dest.read_text() == f"writer {wins[0]}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # no temp file left


# -- also seen ---------------------------------------------------------------------------------------
def test_damaged_png_gives_our_sentence_only(tmp_path: Path, capfd) -> None:
    p = tmp_path / "ph.png"
    write_png(p, make_phantom(0, size=160).image)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 200] = b"\x00" * 200  # damage inside the compressed data
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="could not be decoded"):
        read_image(p)
    err = capfd.readouterr().err
    assert "libpng" not in err and "[ERROR" not in err


def test_stale_temp_files_of_killed_writers_are_removed(ckpt: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    dead = out / ".last.pt.999999999.0123abcd.tmp"  # no process has this pid
    dead.write_bytes(b"half a checkpoint")
    live = temp_name(out / "last.pt")  # ours: a live writer
    live.write_bytes(b"being written")
    assert remove_stale_temps(out) == [dead]
    assert live.exists() and not dead.exists()
    (out / ".phantom_0.png.999999999.89abcdef.tmp").write_bytes(b"x")
    assert main([str(images / "phantom_0.png"), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    assert not (out / ".phantom_0.png.999999999.89abcdef.tmp").exists()


def test_data_root_says_its_images_are_in_subfolders(ckpt: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "nlm"
    (root / "CXR_png").mkdir(parents=True)
    write_png(root / "CXR_png" / "a_0.png", make_phantom(0, size=64).image)
    code = main([str(root), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "subfolders" in err and "CXR_png" in err
