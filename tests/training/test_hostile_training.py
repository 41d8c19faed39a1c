"""Issue 16, hostile input against `cxr-studio-train fit` / `eval`: one test per case.

Rules: JSON files are strict and non-finite outputs are named (5); one-class data is refused before
training, naming the missing class (9); a failed fit leaves nothing that changes the next one, and a
reused split says what it leaves out (10); eval checks its output paths first and shows the metrics
before writing any file (11); plus fit's own "also seen" items (config.toml, stale temp files, the
chance-level hint).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cxr_studio.core.models.checkpoint import save_checkpoint
from cxr_studio.core.models import build_model
from cxr_studio.training import evaluate
from cxr_studio.training.cli import main
from cxr_studio.training import fit as fit_module
from cxr_studio.training.loops import TrainingError
from cxr_studio.training.run_folder import chance_hint, lock_run, unlock_run

from train_helpers import TINY_SETS, tiny_recipe, write_shenzhen


def strict_load(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def fit_args(data: Path | list[Path], out: Path, cache: Path, *extra: str) -> list[str]:
    roots = [str(d) for d in (data if isinstance(data, list) else [data])]
    return ["fit", "--recipe", "demo", "--data", *roots, "--out", str(out), "--no-progress", *TINY_SETS,
            "--set", f"cache_dir={cache}", "--set", "epochs=1", *extra]


def one_class_root(root: Path, n: int = 6) -> Path:
    write_shenzhen(root, 2 * n)
    for p in (root / "CXR_png").glob("*_1.png"):  # keep the normal ones only
        p.unlink()
    return root


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained checkpoint of the tiny recipe (no fit needed) and a one-class data root."""
    base = tmp_path_factory.mktemp("hostile_eval")
    recipe = tiny_recipe()
    torch.manual_seed(0)
    model = build_model(recipe.arch, **recipe.model_kwargs())
    ck = save_checkpoint(base / "ck" / "tiny.pt", model, arch=recipe.arch, arch_kwargs=recipe.model_kwargs(),
                         class_names=["normal", "abnormal"], preprocess=recipe.spec)
    return ck, one_class_root(base / "normals")


# -- case 5 (eval half) ---------------------------------------------------------------------------
def test_eval_json_is_strict_when_the_auc_is_undefined(tiny_ckpt, tmp_path, capsys) -> None:
    ck, normals = tiny_ckpt
    js = tmp_path / "m.json"
    rc = main(["eval", "--checkpoint", str(ck), "--data", str(normals), "--all", "--json", str(js),
               "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert rc == 0
    m = strict_load(js.read_text())
    assert m["auc"] is None and m["n"] == 6
    assert strict_load(out)["auc"] is None  # what is printed is strict JSON too
    assert "undefined" in err and "'normal'" in err


def test_eval_names_non_finite_outputs(tiny_ckpt, tmp_path, capsys) -> None:
    _, normals = tiny_ckpt
    recipe = tiny_recipe()
    model = build_model(recipe.arch, **recipe.model_kwargs())
    with torch.no_grad():  # finite weights whose products overflow float32: NaN outputs
        for prm in model.parameters():
            prm.fill_(1e30)
    ck = save_checkpoint(tmp_path / "overflow.pt", model, arch=recipe.arch, arch_kwargs=recipe.model_kwargs(),
                         class_names=["normal", "abnormal"], preprocess=recipe.spec)
    js = tmp_path / "m.json"
    rc = main(["eval", "--checkpoint", str(ck), "--data", str(normals), "--all", "--json", str(js),
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a finite number (NaN or infinity) for 6 of 6" in err and "Traceback" not in err
    assert not js.exists()


# -- case 9: one class only ------------------------------------------------------------------------
def test_fit_refuses_one_class_naming_the_missing_one(tmp_path, capsys) -> None:
    data = one_class_root(tmp_path / "S")
    out = tmp_path / "run"
    rc = main(fit_args(data, out, tmp_path / "cache"))
    err = capsys.readouterr().err
    assert rc == 2 and "labelled 'normal'" in err and "no 'abnormal' (1) image" in err
    assert not out.exists()  # refused before training: nothing written


# -- case 10: a failed fit leaves nothing behind; a reused split says what it leaves out ----------
def test_failed_fit_leaves_nothing_and_the_rerun_is_clean(tmp_path, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    bad = data / "CXR_png" / "CHNCXR_9999_1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a damaged image: preprocessing fails
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".last.pt.999999999.0123abcd.tmp"  # what a SIGKILL mid-save leaves
    stale.write_bytes(b"half a checkpoint")
    assert main(fit_args(data, out, tmp_path / "cache")) == 2
    assert "CHNCXR_9999_1.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []  # no split.json, no config: nothing changes the rerun
    bad.unlink()
    assert main(fit_args(data, out, tmp_path / "cache")) == 0
    split = json.loads((out / "split.json").read_text())
    assert sum(len(split[k]) for k in ("train", "val", "test")) == 16


def test_reused_split_says_how_many_images_it_leaves_out(tmp_path, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    first = tmp_path / "run1"
    assert main(fit_args(data, first, tmp_path / "cache")) == 0
    write_shenzhen(tmp_path / "S", 20)  # 4 images added since
    capsys.readouterr()
    assert main(fit_args(data, tmp_path / "run2", tmp_path / "cache", "--split-file",
                         str(first / "split.json"))) == 0
    err = capsys.readouterr().err
    assert "names 16 of the 20 images" in err and "4 image(s) are in no part" in err


def test_fit_does_not_overwrite_a_config_toml_in_out(tmp_path, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("# my own notes\n")
    assert main(fit_args(data, out, tmp_path / "cache")) == 2
    err = capsys.readouterr().err
    assert "already holds config.toml" in err and "does not overwrite" in err
    assert (out / "config.toml").read_text() == "# my own notes\n"


def test_chance_warning_names_the_recipe_init() -> None:
    assert "init='paper'" in chance_hint(tiny_recipe("init=paper"))
    hint = chance_hint(tiny_recipe("init=kaiming"))
    assert "paper" not in hint and "init='kaiming'" in hint and "lower learning rate" in hint


# -- case 11: eval's output paths are checked first; the metrics are shown before any write -------
def test_eval_json_naming_a_folder_is_refused_before_any_work(tiny_ckpt, tmp_path, monkeypatch, capsys) -> None:
    ck, normals = tiny_ckpt

    def no_work(*a, **k):
        raise AssertionError("predicted before the output paths were checked")

    monkeypatch.setattr(evaluate, "predict", no_work)
    rc = main(["eval", "--checkpoint", str(ck), "--data", str(normals), "--all", "--json", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 2 and "is a folder" in err and out == ""
    rc = main(["eval", "--checkpoint", str(ck), "--data", str(normals), "--all", "--roc", "/proc/nope/roc.png"])
    out, err = capsys.readouterr()
    assert rc == 2 and "Cannot write" in err and out == "" and "Traceback" not in err


def test_eval_shows_the_metrics_before_a_write_fails(tiny_ckpt, tmp_path, monkeypatch, capsys) -> None:
    ck, normals = tiny_ckpt

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "m.roc.png"))

    monkeypatch.setattr(evaluate, "roc_png", disk_full)
    rc = main(["eval", "--checkpoint", str(ck), "--data", str(normals), "--all", "--json", str(tmp_path / "m.json"),
               "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert rc == 2 and strict_load(out)["n"] == 6  # the metrics were printed, then the write failed
    assert "computed but could not be written" in err and "No space left" in err


def test_eval_skips_an_unwritable_default_roc_with_a_note(tiny_ckpt, tmp_path, capsys) -> None:
    """Without --json or --roc the ROC picture goes beside the checkpoint; where it cannot, eval says so
    and still gives the metrics (exit 0)."""
    ck, normals = tiny_ckpt
    mine = tmp_path / "tiny.pt"
    shutil.copy(ck, mine)
    (tmp_path / "tiny.roc.png").mkdir()  # the default ROC path is taken by a folder
    rc = main(["eval", "--checkpoint", str(mine), "--data", str(normals), "--all", "--cache-dir", str(tmp_path / "c")])
    out, err = capsys.readouterr()
    assert rc == 0 and strict_load(out)["n"] == 6 and "Traceback" not in err
    assert "note: The ROC picture was not written" in err and "pass --roc PATH" in err
    assert (tmp_path / "tiny.roc.png").is_dir() and not any((tmp_path / "tiny.roc.png").iterdir())


# -- siblings: the run folder is checked first, held exclusively, and Ctrl-C says how to go on ------
def test_fit_into_an_unwritable_folder_is_refused_first(tmp_path, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    assert main(fit_args(data, Path("/proc/no/run"), tmp_path / "cache")) == 2
    err = capsys.readouterr().err
    assert "Cannot write into the run folder" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # nothing was preprocessed


def test_a_second_fit_into_a_busy_run_folder_is_refused(tmp_path, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    out = tmp_path / "run"
    held = lock_run(out)  # another fit holds the folder
    try:
        assert main(fit_args(data, out, tmp_path / "cache")) == 2
    finally:
        unlock_run(held)
    assert "another fit is running" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []


def test_the_run_lock_uses_msvcrt_where_there_is_no_flock(tmp_path, monkeypatch) -> None:
    """Windows has no fcntl: the lock falls back to msvcrt.locking (faked here, holding a set of
    locked files as the OS would) and refuses a second holder in the same words."""
    import sys
    import types

    held_files: set[str] = set()

    def locking(fd: int, mode: int, nbytes: int) -> None:
        import os
        key = os.path.realpath(f"/proc/self/fd/{fd}")
        if mode == fake.LK_NBLCK and key in held_files:
            raise OSError(36, "Resource deadlock avoided")
        held_files.add(key)

    fake = types.SimpleNamespace(LK_NBLCK=2, locking=locking)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl -> ImportError
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    out = tmp_path / "run"
    first = lock_run(out)
    assert first is not None and (out / ".fit.lock").exists()
    with pytest.raises(TrainingError, match="another fit is running"):
        lock_run(out)
    unlock_run(first)
    assert not (out / ".fit.lock").exists()
    monkeypatch.setitem(sys.modules, "msvcrt", None)  # neither: no lock, and no lock file left behind
    assert lock_run(out) is None and not (out / ".fit.lock").exists()


def test_ctrl_c_during_fit_says_how_to_resume(tmp_path, monkeypatch, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    out = tmp_path / "run"
    real, calls = fit_module.train_epoch, []

    def second_epoch_interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fit_module, "train_epoch", second_epoch_interrupted)
    assert main(fit_args(data, out, tmp_path / "cache", "--set", "epochs=2")) == 130
    err = capsys.readouterr().err
    assert "interrupted; continue with the same command and --resume" in err and "Traceback" not in err
    assert (out / "last.pt").exists() and (out / "split.json").exists()  # the finished epoch is kept


def test_a_looping_link_among_training_images_is_named(tmp_path, capsys) -> None:
    data = write_shenzhen(tmp_path / "S", 16)
    loop = data / "CXR_png" / "CHNCXR_0100_1.png"
    loop.symlink_to(loop)
    assert main(fit_args(data, tmp_path / "run", tmp_path / "cache")) == 2
    err = capsys.readouterr().err
    assert "CHNCXR_0100_1.png is a symbolic link loop" in err


def test_an_os_error_in_any_subcommand_is_one_line(tmp_path, capsys) -> None:
    assert main(["phantoms", "--out", "/proc/no/phantoms", "--n", "1", "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr-studio-train phantoms: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_a_damaged_mask_is_our_sentence_only(tmp_path, capfd) -> None:
    from cxr_studio.training.data import DatasetError, read_mask

    good = write_shenzhen(tmp_path / "S", 2) / "mask" / "CHNCXR_0000_0_mask.png"
    raw = bytearray(good.read_bytes())
    raw[60:] = b"\x00" * (len(raw) - 60)  # damaged compressed data
    bad = tmp_path / "bad_mask.png"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="cannot read the mask .*bad_mask.png"):
        read_mask([bad])
    err = capfd.readouterr().err
    assert "libpng" not in err and "[ERROR" not in err
