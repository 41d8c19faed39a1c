"""Atomic file writes: write a temporary file in the destination's folder, then ``os.replace``.

A reader never sees half a file, and a failure (disk full, an exception while writing, Ctrl-C)
leaves the previous file, if any, untouched and no temporary file behind. The temporary file is
created with the usual umask permissions (not ``mkstemp``'s 0600); its name carries the writer's
pid, so `remove_stale_temps` can delete what a killed process (SIGKILL) left.

Also here: `publish_exclusive` / `write_text_exclusive` (never replace an existing file, even when
two processes race for the name), `strict_json` (every JSON file we write is strict JSON: NaN and
infinities become null) and `check_writable_dir` / `check_writable_file` (output paths are proven
writable before any work is done).
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_file(dest: str | os.PathLike, mode: str = "wb", fsync: bool = False, **open_kw) -> Iterator[IO]:
    """Open a temporary sibling of ``dest`` for writing; it replaces ``dest`` when the block ends
    without an exception, and is removed otherwise."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes with mode 'wb' or 'w', not {mode!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with open(tmp, mode.replace("w", "x"), **open_kw) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(dest, "wb") as f:
        f.write(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    with atomic_file(dest, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(dest)


def temp_name(dest: str | os.PathLike) -> Path:
    """``.<name>.<pid>.<random>.tmp`` beside ``dest``: the pid lets `remove_stale_temps` tell the
    leftovers of a killed process from the files a live one is still writing."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its files
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_file` left in ``folder`` when its process was killed
    (SIGKILL, power loss: no ``finally`` ran). Files of live processes are kept. Returns what went."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def publish_exclusive(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the finished temporary file ``tmp`` to ``dest`` only if ``dest`` does not exist, as one
    step (a hard link fails when the name is taken, even if another process takes it at the same
    moment). Raises FileExistsError, and leaves ``tmp`` in place, when ``dest`` exists."""
    tmp, dest = Path(tmp), Path(dest)
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError as e:  # no hard links here (FAT, some network shares): reserve the name, then replace
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.replace(tmp, dest)
        return
    tmp.unlink()


def write_text_exclusive(dest: str | os.PathLike, text: str) -> Path:
    """Like `write_text_atomic`, but raises FileExistsError instead of replacing an existing ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as f:
            f.write(text)
        publish_exclusive(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON can hold: NaN and infinities become None (null), numpy
    scalars and arrays plain numbers and lists, tuples lists, Paths strings."""
    if isinstance(obj, float):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return json_safe(obj.tolist())
    return obj


def strict_json(obj: Any, **kw: Any) -> str:
    """``json.dumps`` that never writes NaN or Infinity (not JSON): they become null (see `json_safe`)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def check_writable_dir(folder: str | os.PathLike, what: str = "the output folder") -> Path:
    """Create ``folder`` when missing and prove that a file can be written in it (a real probe file:
    permission bits lie to root and on read-only mounts). Raises ValueError with one sentence
    otherwise."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise ValueError(f"Cannot use {d} as {what}: it is a file, not a folder.")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cxr-write-probe.", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"Cannot write into {what} {d}: {e.strerror or e}.") from None
    return d


def check_writable_file(path: str | os.PathLike, what: str = "the output file") -> Path:
    """Check, before any work, that ``path`` can be written: not a folder, and its folder writable."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"Cannot write {what} to {p}: it is a folder; give a file name.")
    check_writable_dir(p.parent if str(p.parent) else Path("."), f"the folder of {what}")
    return p
