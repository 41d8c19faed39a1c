"""The one mask reader: lung, lesion and atlas masks stored as images (0/255, 0/1, 8 or 16 bit).

``read_mask(paths, shape=None, rule="half")`` returns the OR of the files as a bool array: a pixel is
"in" where it is above half of that file's maximum (an all-zero file is empty), or, with
``rule="nonzero"``, wherever it is not 0 (the trainer's rule for lung masks since its first run, kept so
its cached crops stay reproducible). With ``shape`` each file is resized
(nearest neighbour) to it first. A missing or damaged file is one sentence (``MaskReadError``), without
libpng's own error line on stderr.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from cxr_studio.core.imaging.native_stderr import quiet_native_stderr


class MaskReadError(ValueError):
    """A mask file could not be read; the message names it."""


RULES = ("half", "nonzero")


def _one(path: Path, shape: tuple[int, int] | None, rule: str) -> np.ndarray:
    with quiet_native_stderr():
        a = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if a is None or a.size == 0:
        raise MaskReadError(f"cannot read the mask {path}: missing, damaged or not an image")
    top = float(a.max())
    if rule == "nonzero":
        m = a > 0
    else:
        m = a > top / 2 if top > 0 else np.zeros(a.shape, bool)
    if shape is not None and m.shape != tuple(shape):
        m = cv2.resize(m.astype(np.uint8), (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST) > 0
    return m


def read_mask(paths: str | os.PathLike | Iterable[str | os.PathLike],
              shape: tuple[int, int] | None = None, rule: str = "half") -> np.ndarray | None:
    """OR of the mask files (one path or several); None when given no path."""
    if rule not in RULES:
        raise ValueError(f"mask rule must be one of {RULES}, got {rule!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = None
    for p in paths:
        m = _one(Path(p), shape, rule)
        if out is not None and m.shape != out.shape:
            raise MaskReadError(f"the mask {p} is {m.shape[1]}x{m.shape[0]}, its partner {out.shape[1]}x{out.shape[0]}")
        out = m if out is None else (out | m)
    return out
