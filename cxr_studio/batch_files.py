"""The files of `cxr-studio export` (batch.py): which inputs are images, the summary.csv, and the
images an earlier, interrupted run already exported (``--skip-existing``)."""
from __future__ import annotations

import csv
import io as _io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .core.atomic import write_text_atomic, write_text_exclusive


def collect_images(inputs: Sequence[str], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Files as given (order kept) and the supported images directly inside folders.

    Entries of a folder passed over because they lead nowhere (symbolic link loops, broken links)
    are appended to ``skipped`` as (path, why), for the caller to report."""
    from .core.imaging.io import scan_folder

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found, passed = scan_folder(p)
            out.extend(found)
            if skipped is not None:
                skipped.extend(passed)
        else:
            out.append(p)  # a missing, looping or unreadable file is reported per image later
    seen: set[str] = set()
    unique = []
    for p in out:
        try:
            key = str(p.resolve())
        except (OSError, RuntimeError):  # a symbolic link loop: reported when it is read
            key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _no_images_message(inputs: Sequence[str]) -> str:
    """"No images found", and where they are when a folder holds them one level down (a data root)."""
    from .core.imaging.io import list_images

    hints = []
    for item in inputs:
        d = Path(item)
        if not d.is_dir():
            continue
        try:
            subs = sorted(s for s in d.iterdir() if s.is_dir() and not s.name.startswith("."))
        except OSError:
            continue
        with_images = [s for s in subs if list_images(s)]
        if with_images:
            names = ", ".join(str(s) for s in with_images[:3]) + (", ..." if len(with_images) > 3 else "")
            hints.append(f"{d} has no images itself, but its subfolders do ({names}); name those folders "
                         "instead (folders are not searched recursively)")
    msg = "No images found in " + ", ".join(inputs) + "."
    return msg + (" " + "; ".join(hints) + "." if hints else "")


def write_summary(
    out: Path, rows: list[dict[str, Any]], class_names: Sequence[str], overwrite: bool = False
) -> Path:
    """Write summary.csv atomically (summary_1.csv... when taken, unless ``overwrite``); returns its path."""
    cols = ["file", "status", "output", "predicted", "operating_point"] + [f"p_{c}" for c in class_names]
    cols += ["layer", "channel", "error"]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    if overwrite:
        return write_text_atomic(out / "summary.csv", buf.getvalue())
    for i in range(100_000):  # exclusive: two exports into one folder never share a summary
        dest = out / ("summary.csv" if i == 0 else f"summary_{i}.csv")
        if dest.exists():
            continue
        try:
            return write_text_exclusive(dest, buf.getvalue())
        except FileExistsError:
            continue
    raise OSError(f"no free summary file name in {out}")


def already_exported(path: Path, out: Path, checkpoint_sha256: str | None) -> str | None:
    """The PNG name of a complete earlier export of this image with this checkpoint in ``out``
    (for --skip-existing), or None."""
    try:
        image = str(path.resolve())
    except (OSError, RuntimeError):
        return None
    for i in range(100_000):
        stem = out / (path.stem if i == 0 else f"{path.stem}_{i}")
        files = [stem.with_name(stem.name + suf) for suf in (".png", ".npy", ".json")]
        if not any(f.exists() for f in files):
            return None
        try:
            side = json.loads(files[2].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(side, dict) and side.get("image_path") == image and files[0].exists() \
                and files[1].exists() and side.get("checkpoint_sha256") == checkpoint_sha256:
            return files[0].name
    return None
