"""A checkpoint file as bytes on disk, both ways: written with plain types only (``to_plain``) and
atomically (``torch_save_atomic``); read safely (``read_raw``): what the file is (by its first bytes
and, for zip archives, their member names), and its dict read with ``torch.load(weights_only=True)``
only. ``checkpoint.py`` builds models from these dicts.

TorchScript and exported programs are recognised here and refused: they carry code or a graph,
so only ``models.importers.open_model`` runs them, when the user names the file.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zipfile

from cxr_studio.core.atomic import atomic_file


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file and says why."""


_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
}


def code_archive_kind(path: Path) -> str | None:
    """"TorchScript" / "exported program" when ``path`` is a zip archive of either (they carry code
    or a graph and are opened by ``models.importers.open_model``), else None."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    tails = {n.split("/", 1)[-1] for n in names}
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return "TorchScript"
    if any(t.startswith(("models/", "serialized_exported_program")) or "exported_program" in t for t in tails) \
            or "archive_format" in tails:
        return "exported program"
    return None


def _sniff(path: Path) -> str | None:
    """What the file looks like when it is clearly not a PyTorch file, else None."""
    with open(path, "rb") as f:
        head = f.read(132)
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        kind = code_archive_kind(path)
        return f"a {kind} file, which carries code or a graph; open it explicitly (cxr-studio --checkpoint " \
               "FILE, or cxr_studio.core.models.importers.open_model) to run it" if kind else None
    if head[:1] == b"\x80":  # legacy pickle format
        return None
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    if head[128:132] == b"DICM":
        return "a DICOM image"
    return "not a PyTorch file"


def read_raw(path: str | os.PathLike) -> dict[str, Any]:
    """The stored dict, read with ``torch.load(weights_only=True)`` only; ``CheckpointError`` otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file, so it cannot be a checkpoint.")
    what = _sniff(path)
    if what is not None:
        raise CheckpointError(f"{path} is not a checkpoint: it is {what}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "global" in str(exc):
            raise CheckpointError(
                f"Refused to load {path}: it asks to run Python code or import modules "
                "(a safe load never does that; the file may be malicious, or it is a whole pickled model: "
                "save model.state_dict() instead)."
            ) from None
        raise CheckpointError(
            f"Refused to load {path}: it holds Python objects other than tensors and plain values, "
            "which a safe load does not run."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is truncated or corrupt and cannot be read ({type(exc).__name__}: {str(exc)[:120]})."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(obj).__name__}, not a dict.")
    return obj


def to_plain(value: Any, where: str) -> Any:
    """``value`` as plain types (Path -> str, numpy scalars -> Python); error on anything else."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    for t in (bool, int, float, str):  # subclasses (TorchVersion, IntEnum...) need globals to load
        if isinstance(value, t):
            return t(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where} has a key {k!r} of type {type(k).__name__}; keys must be str or int.")
            out[k] = to_plain(v, f"{where}[{k!r}]")
        return out
    raise CheckpointError(
        f"{where} holds a {type(value).__name__}, which a checkpoint cannot store "
        "(only str, int, float, bool, None, lists, dicts and tensors)."
    )


def torch_save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace`` (the old file survives
    any failure; the new one gets the usual umask permissions, unlike ``mkstemp``'s 0600)."""
    with atomic_file(path, "wb", fsync=True) as f:
        torch.save(obj, f)
