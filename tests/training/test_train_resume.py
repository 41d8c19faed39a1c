"""--resume: a run killed after its first epoch's checkpoint continues and ends where an
uninterrupted run with the same seed ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from train_helpers import log_rows, TINY_SETS, write_shenzhen

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3


def _cmd(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxr_studio.training.cli", "fit", "--recipe", "demo", "--data", str(data),
            "--out", str(out), "--no-progress", "--threads", "1", *TINY_SETS, "--set", f"cache_dir={cache}",
            "--set", f"epochs={EPOCHS}", "--set", "dropout=0.3", "--set", "rotation_deg=5", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    return env


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path) -> None:
    data = write_shenzhen(tmp_path / "S", 24)
    cache = tmp_path / "cache"
    # the uninterrupted reference (also fills the cache)
    ref = subprocess.run(_cmd(data, tmp_path / "ref", cache), env=_env(), cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(data, run, cache, "--set", "max_steps_per_epoch=0"), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run / "last.pt").exists(), "the first epoch never finished"
    done = len(log_rows(run)) if (run / "log.csv").exists() else 0
    assert done < EPOCHS, "the run finished before it could be killed"

    resumed = subprocess.run(_cmd(data, run, cache, "--set", "max_steps_per_epoch=0", "--resume"), env=_env(),
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    a, b = log_rows(tmp_path / "ref"), log_rows(run)
    assert [r["epoch"] for r in b] == [str(e) for e in range(1, EPOCHS + 1)]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert [float(r[key]) for r in a] == [float(r[key]) for r in b], key


def test_resume_without_a_run_is_a_clear_error(tmp_path) -> None:
    from cxr_studio.training.cli import main

    data = write_shenzhen(tmp_path / "S", 4)
    rc = main(["fit", "--recipe", "demo", "--data", str(data), "--out", str(tmp_path / "none"), "--resume",
               *TINY_SETS])
    assert rc == 2


def test_resume_accepts_a_run_saved_before_a_field_existed(tmp_path) -> None:
    """A run folder written by an older version lacks newer recipe fields: they count as their
    defaults. Only epochs, stop_after_last_drop and the prose description may change on resume."""
    import json

    import pytest

    from cxr_studio.training.run_folder import check_resume_recipe as _check_resume_recipe
    from cxr_studio.training.loops import TrainingError
    from cxr_studio.training.recipes import load_recipe

    recipe = load_recipe("demo")
    saved = recipe.to_dict()
    del saved["stop_after_last_drop"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    _check_resume_recipe(tmp_path, recipe)
    _check_resume_recipe(tmp_path, load_recipe("demo", sets=["epochs=80", "stop_after_last_drop=5"]))
    _check_resume_recipe(tmp_path, load_recipe("demo", sets=["epochs=80", "description=longer run"]))
    with pytest.raises(TrainingError, match=r"differs .*\(lr\)"):
        _check_resume_recipe(tmp_path, load_recipe("demo", sets=["lr=0.5"]))
