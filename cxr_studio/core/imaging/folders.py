"""Folders of images and the links in them (the folder half of `io`; re-exported there).

`list_images(folder)` lists the readable images directly inside a folder; `scan_folder` also
returns what it passed over that a user may have meant as an image (symbolic link loops and
broken links), so that callers say so instead of skipping it silently.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from cxr_studio.core.imaging.formats import ImageReadError, is_supported

def link_problem(p: Path) -> str | None:
    """Why a path that is a symbolic link leads nowhere ("a symbolic link loop", "a broken symbolic
    link to X"), or None when it is not such a link."""
    try:
        if not p.is_symlink():
            return None
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        return f"a broken symbolic link (to {target}, which does not exist)"
    except RuntimeError:  # pathlib's own loop detection on some Python versions
        return "a symbolic link loop"
    return None


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _is_dicom_without_suffix(p: Path) -> bool:
    if p.suffix:
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Readable image files directly inside `folder`, in natural order (img2 before img10).

    Files are chosen by suffix (`is_supported`); suffix-less files are included when they
    start like DICOM. Hidden files are skipped. Raises `ImageReadError` if `folder` is not one.
    """
    return scan_folder(folder)[0]


def scan_folder(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """`list_images`, plus the entries passed over that a user may have meant as images:
    (path, why) for symbolic link loops and broken links (a caller should say so, not skip silently)."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageReadError(f"{d} is not a folder.")
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    try:
        entries = list(d.iterdir())
    except OSError as e:
        raise ImageReadError(f"The folder {d} cannot be listed: {e.strerror or e}.") from None
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_file():
            if is_supported(p) or _is_dicom_without_suffix(p):
                found.append(p)
        elif not p.exists():
            why = link_problem(p)
            if why:
                skipped.append((p, why))
    return sorted(found, key=_natural_key), sorted(skipped, key=lambda t: _natural_key(t[0]))
