"""Atomic file writes: write a temporary file in the destination's folder, then ``os.replace``.

A reader never sees half a file, and a failure (disk full, an exception while writing, Ctrl-C)
leaves the previous file, if any, untouched and no temporary file behind. The temporary file is
created with the usual umask permissions (not ``mkstemp``'s 0600).
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_file(dest: str | os.PathLike, mode: str = "wb", fsync: bool = False, **open_kw) -> Iterator[IO]:
    """Open a temporary sibling of ``dest`` for writing; it replaces ``dest`` when the block ends
    without an exception, and is removed otherwise."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes with mode 'wb' or 'w', not {mode!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
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
