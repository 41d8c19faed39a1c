"""Atomic writes leave either the old file or the complete new one, never a temp file."""
from __future__ import annotations

import pytest

from cxr_studio.core.atomic import atomic_file, write_bytes_atomic, write_text_atomic


def test_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    write_text_atomic(p, "one")
    write_bytes_atomic(p, b"two")
    assert p.read_bytes() == b"two"
    assert [q.name for q in p.parent.iterdir()] == ["a.txt"]


def test_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(p) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["a.bin"]
    with pytest.raises(ValueError):
        with atomic_file(p, "ab"):
            pass
