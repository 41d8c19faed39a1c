"""The run folder of ``fit`` (fit.py): who may write into it, and what a reused split or a stuck
loss should tell the user.

- `RunFolder`: the folder as a run found it and what the run wrote there (``open`` refuses, locks
  and checks the recipe on --resume; ``undo`` removes the files of a run that failed before its
  first checkpoint);
- `check_resume_recipe`: --resume only with the recipe the run was started with (epochs,
  stop_after_last_drop and the description may change);
- `lock_run`: an exclusive lock (``.fit.lock``, flock on POSIX, msvcrt.locking on Windows: released by
  the OS when the process dies), so
  two fits into one --out at once cannot overwrite each other's files;
- `check_run_folder`: without --resume, --out must not hold another run's files (config.toml would
  be overwritten, split.json silently reused);
- `report_split_coverage`: a reused split says how many of the images now found it leaves out;
- `chance_hint`: the advice for a loss stuck at ln 2, matching the recipe's initialisation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .ddp import DistInfo
from .loops import TrainingError
from .recipes import Recipe
from ..core.atomic import check_writable_dir, remove_stale_temps


LOCK_NAME = ".fit.lock"


def lock_run(run: Path) -> Any:
    """An exclusive, non-blocking lock on ``run/.fit.lock`` (released by the OS if the process dies);
    None where file locks are not available."""
    try:
        check_writable_dir(run, "the run folder (--out)")
    except ValueError as e:
        raise TrainingError(str(e)) from None
    f = open(run / LOCK_NAME, "a+")
    try:
        if not _try_lock(f):
            f.close()
            Path(f.name).unlink(missing_ok=True)
            return None
    except OSError:
        f.close()
        raise TrainingError(f"another fit is running in {run} right now; wait for it to finish or choose "
                            "another --out") from None
    return f


def _try_lock(f: Any) -> bool:
    """Lock ``f`` exclusively without waiting: flock on POSIX, msvcrt.locking (its first byte) on
    Windows; both are released by the OS when the process dies. OSError when another process holds
    it; False where neither exists."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is not None:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    try:
        import msvcrt
    except ImportError:
        return False
    f.seek(0)
    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    return True


def unlock_run(lock: Any) -> None:
    """Release the run lock and remove the lock file (POSIX removes it while still holding it, so no
    other fit can lock the old file in between; Windows cannot remove an open file, so close first)."""
    if lock is None or lock.closed:
        return
    try:
        Path(lock.name).unlink(missing_ok=True)
    except PermissionError:  # Windows: still open
        lock.close()
        try:
            Path(lock.name).unlink(missing_ok=True)
        except OSError:
            pass
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


_MAY_CHANGE_ON_RESUME = ("epochs", "stop_after_last_drop", "description")  # description: prose only


def check_resume_recipe(run: Path, recipe: Recipe) -> None:
    """--resume continues only the recipe ``run`` was started with (its config.json)."""
    saved = json.loads((run / "config.json").read_text())
    now = recipe.to_dict()
    defaults = Recipe(name=recipe.name).to_dict()  # a field added since the run started has its default
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in _MAY_CHANGE_ON_RESUME and saved.get(k, defaults.get(k)) != now.get(k))
    if diff:
        raise TrainingError(
            f"--resume: the recipe differs from the one {run} was started with ({', '.join(diff)}); "
            f"resume with the same recipe (only {' and '.join(_MAY_CHANGE_ON_RESUME)} may change) "
            "or use a new --out folder"
        )


@dataclass
class RunFolder:
    """The run folder as this run found it, and what the run wrote there: a run that fails before its
    first checkpoint removes those files again (and the folder, when it made it)."""

    path: Path
    was_there: bool
    created: list[Path] = field(default_factory=list)
    lock: Any = None

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def open(self, recipe: Recipe, resume: bool, split_file: str | Path | None, info: DistInfo) -> None:
        """Refuse a folder this run may not write into; on rank 0 take the lock and clear stale temps."""
        if resume and not self.last.exists():
            raise TrainingError(f"--resume: no last.pt in {self.path} to continue from")
        if not resume and self.last.exists():
            raise TrainingError(f"{self.path} already holds a run (last.pt); pass --resume to continue it or "
                                "choose a new --out")
        if info.is_main:
            self.lock = lock_run(self.path)  # two fits into one --out at once: the second is refused
            check_run_folder(self.path, resume, split_file)
            if resume:
                check_resume_recipe(self.path, recipe)
            remove_stale_temps(self.path)  # e.g. a .last.pt.*.tmp a SIGKILL left mid-write

    def will_write(self, *paths: Path) -> None:
        self.created += [p for p in paths if not p.exists()]

    def undo(self) -> None:
        """Remove what this run wrote (it failed before its first checkpoint)."""
        for p in self.created:
            p.unlink(missing_ok=True)
        self.close()
        if not self.was_there and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def close(self) -> None:
        unlock_run(self.lock)
        self.lock = None
