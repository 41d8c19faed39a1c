"""The run folder of ``fit`` (engine.py): who may write into it, and what a reused split or a stuck
loss should tell the user.

- `lock_run`: an exclusive lock (``.fit.lock``, flock: released by the OS when the process dies), so
  two fits into one --out at once cannot overwrite each other's files;
- `check_run_folder`: without --resume, --out must not hold another run's files (config.toml would
  be overwritten, split.json silently reused);
- `report_split_coverage`: a reused split says how many of the images now found it leaves out;
- `chance_hint`: the advice for a loss stuck at ln 2, matching the recipe's initialisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .loops import TrainingError
from .recipes import Recipe


LOCK_NAME = ".fit.lock"


def lock_run(run: Path) -> Any:
    """An exclusive, non-blocking lock on ``run/.fit.lock`` (released by the OS if the process dies);
    None where file locks are not available."""
    from ..core.atomic import check_writable_dir

    try:
        check_writable_dir(run, "the run folder (--out)")
    except ValueError as e:
        raise TrainingError(str(e)) from None
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        return None
    f = open(run / LOCK_NAME, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise TrainingError(f"another fit is running in {run} right now; wait for it to finish or choose "
                            "another --out") from None
    return f


def unlock_run(lock: Any) -> None:
    if lock is not None and not lock.closed:
        Path(lock.name).unlink(missing_ok=True)
        lock.close()


def check_run_folder(run: Path, resume: bool, split_file: str | Path | None) -> None:
    """Without --resume, --out must not hold another run's files: they would be overwritten
    (config.toml) or silently reused (split.json). Checked again under the run lock."""
    if not resume:
        given = Path(split_file).resolve() if split_file else None
        theirs = [n for n in ("last.pt", "config.toml", "config.json", "split.json") if (run / n).exists()
                  and not (n == "split.json" and given == (run / n).resolve())]
        if theirs:
            raise TrainingError(
                f"{run} already holds {', '.join(theirs)} of another run; fit does not overwrite them. Choose a "
                f"new --out, delete them, or pass --resume to continue that run"
                + (" (--split-file " + str(run / "split.json") + " reuses its split)" if "split.json" in theirs else ""))


def report_split_coverage(split_path: str | Path, data: Any, say: Callable[[str], None]) -> None:
    """A reused split may not name every image now in the data roots: say how many it leaves out."""
    named = {i for part in ("train", "val", "test") for i in data.split[part]}
    left_out = [s.id for s in data.samples if s.id not in named]
    if left_out:
        say(f"WARNING: the split {split_path} names {len(named)} of the {len(data.samples)} images in the data "
            f"roots; {len(left_out)} image(s) are in no part and are not used (first: {left_out[0]}). Use a new "
            "--out (a fresh split) to train on all of them.")
    else:
        say(f"reusing the split {split_path} ({len(named)} images)")


def chance_hint(recipe: Recipe) -> str:
    if recipe.init == "paper":
        return ("With init='paper' (N(0, 0.01)) this is expected for the 8-layer net (see the paper-custom-tuned "
                "recipe: --set init=kaiming).")
    return (f"With init={recipe.init!r} and lr={recipe.lr:g}, try a lower learning rate (--set lr=...), "
            "check that the labels match the images, or look at the preprocessed inputs.")
