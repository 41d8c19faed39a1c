"""Defaults for trainer commands run without ``--checkpoint``: the shipped model for radiographs.

Used only where it is unambiguous: the TB model (``models/cxrnet-tb.pt``) ships, or exactly one
shipped model is meant for real radiographs (`core.models.shipped.default_shipped_model`). Then
- the images default to that model's own held-out test part (its split travels in its provenance),
  so ``cxr-studio-train eval --data ROOT`` reproduces the numbers the model ships with, and never
  scores images the model was trained or validated on without saying so;
- the decision threshold defaults to the model's operating threshold;
- the ROC picture goes to the current folder and the preprocessing cache to the user's cache folder
  (the shipped file's folder may be read-only).
Otherwise the command stops with one sentence naming the shipped models.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import tempfile
from pathlib import Path

from ..core.models.checkpoint import peek_checkpoint
from ..core.models.shipped import default_model_for_radiographs, no_default_message, operating_threshold
from .data import DatasetError, scan_roots

SPLIT_PARTS = ("train", "val", "test")


def user_cache_dir() -> Path:
    """Where preprocessed images of the shipped model's evaluations are kept ($XDG_CACHE_HOME aware)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxr-studio" / "eval"


def _split_file_from_provenance(prov: dict, roots: list[str]) -> Path | None:
    """The model's own split written to a temporary split.json, when the data hold its images."""
    split = prov.get("split")
    if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in SPLIT_PARTS):
        return None
    ids = {s.id for s in scan_roots(list(roots))}
    if not set(split["test"]) <= ids:
        return None
    fd, name = tempfile.mkstemp(prefix="cxr-studio-split-", suffix=".json")
    atexit.register(lambda: os.path.exists(name) and os.unlink(name))  # only for this command's run
    with open(fd, "w", encoding="utf-8") as f:
        json.dump({k: split[k] for k in SPLIT_PARTS} | {"seed": prov.get("seed"), "note": "from the model's provenance"}, f)
    return Path(name)


def resolve_model_and_split(a: argparse.Namespace) -> None:
    """Fill ``a.checkpoint``, ``a.split_file``, ``a.threshold`` (and ``a.roc``) in place."""
    shipped = a.checkpoint is None
    if shipped:
        path = default_model_for_radiographs()
        if path is None:
            raise DatasetError(no_default_message())
        a.checkpoint = str(path)
        print(f"using the shipped model {path}")
    try:
        prov = peek_checkpoint(a.checkpoint).get("provenance") or {}
    except ValueError:  # not a CXR Studio checkpoint (a state dict with --arch, TorchScript...): evaluate opens it
        prov = {}
    if getattr(a, "threshold", "absent") is None:
        t = operating_threshold(prov)
        a.threshold = t if t is not None else 0.5
        if t is not None:
            print(f"threshold {t:.3f}: the model's operating point")
    if shipped and not a.all and a.split_file is None:
        split = _split_file_from_provenance(prov, a.data)
        if split is None:
            a.all = True
            print("these images are not the model's own data set: evaluating every image")
        else:
            a.split_file = str(split)
            print(f"images: the model's own held-out {a.part} part (its split is stored in the checkpoint)")
    if shipped and getattr(a, "cache_dir", "absent") is None:  # never beside the installed model file
        a.cache_dir = str(user_cache_dir())
    if shipped and hasattr(a, "roc") and a.roc is None and getattr(a, "json", None) is None:
        a.roc = str(Path.cwd() / f"{Path(a.checkpoint).stem}.roc.png")
