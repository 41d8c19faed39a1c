"""Synthetic PA chest radiographs ("phantoms") with exact lung and lesion masks.

``make_phantom(seed, size=512, abnormal=None, lesion_types=None) -> Phantom`` draws one image;
``write_phantom_dataset(out_dir, n, ...)`` writes a folder in the NLM Shenzhen layout.

The anatomy is described in normalised model coordinates (u, v) in 0..1 (u to the image's right,
v down), then mapped to pixels through a small random similarity transform (shift, scale,
rotation). PA view: the patient's right lung is on the image's left, the heart bulges to the
image's right. Independent random streams are used for anatomy, label, lesions and noise, so
``make_phantom(s, abnormal=False)`` has exactly the anatomy and noise of ``make_phantom(s,
abnormal=True)``: the two differ only around the lesions. The anatomy is drawn in ``anatomy.py``;
here the lesions (``lesions.py``) and the acquisition (blur, quantum noise) are added.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from cxr_studio.core.phantoms.anatomy import render_normal
from cxr_studio.core.phantoms.lesions import LESION_TYPES, LungInfo, add_lesions
from cxr_studio.core.imaging.radiograph import Radiograph
from cxr_studio.core.atomic import atomic_file
from cxr_studio.core.imaging.png import write_png

__all__ = ["LESION_TYPES", "Phantom", "PhantomError", "make_phantom", "write_phantom_dataset"]

MIN_SIZE, MAX_SIZE = 64, 4096


class PhantomError(ValueError):
    """Bad arguments for phantom generation."""


@dataclass
class Phantom:
    """One synthetic radiograph and its ground truth."""

    image: np.ndarray  # float32 (S, S) 0..1, bone bright
    lung_mask: np.ndarray  # bool (S, S)
    lesion_mask: np.ndarray  # bool (S, S), empty when normal
    label: int  # 0 normal, 1 abnormal
    lesions: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0

    def radiograph(self) -> Radiograph:
        """The image as a ``Radiograph`` (meta format "phantom")."""
        return Radiograph(
            self.image.copy(),
            {"path": None, "format": "phantom", "bit_depth": 32, "photometric": "MONOCHROME2",
             "original_size": tuple(self.image.shape), "pixel_spacing": None,
             "phantom_seed": self.seed, "label": self.label,
             "lesion_types": [d["type"] for d in self.lesions]},
        )


# ----------------------------------------------------------------------------- public API
def _check_args(seed: Any, size: Any) -> tuple[int, int]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomError(f"Phantom seed must be a non-negative integer, got {seed!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or not MIN_SIZE <= size <= MAX_SIZE:
        raise PhantomError(f"Phantom size must be an integer from {MIN_SIZE} to {MAX_SIZE} "
                           f"pixels, got {size!r}.")
    return int(seed), int(size)


def _choose_types(rng: np.random.Generator, lesion_types: Iterable[str] | None) -> list[str]:
    if lesion_types is not None:
        types = [lesion_types] if isinstance(lesion_types, str) else list(lesion_types)
        bad = [t for t in types if t not in LESION_TYPES]
        if bad:
            raise PhantomError(f"Unknown lesion type(s) {bad}; choose from {LESION_TYPES}.")
        if types.count("effusion") > 2:
            raise PhantomError("A phantom can have at most two effusions (one per lung).")
        return types
    n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    types = [str(t) for t in rng.choice(LESION_TYPES, size=n)]
    while types.count("effusion") > 1:
        types.remove("effusion")
    return types


def make_phantom(
    seed: int, size: int = 512, abnormal: bool | None = None,
    lesion_types: Iterable[str] | str | None = None,
) -> Phantom:
    """A synthetic PA chest radiograph with its lung mask and (when abnormal) lesions.

    ``abnormal=None`` lets the seed decide (50/50), unless ``lesion_types`` is given, which
    asks for exactly those lesions (one each, in order) and makes the phantom abnormal.
    The same seed gives identical output; with ``abnormal=False`` the same anatomy and noise.
    """
    seed, size = _check_args(seed, size)
    if lesion_types is not None and not isinstance(lesion_types, str):
        lesion_types = list(lesion_types) or None  # an empty list means "any"
    if abnormal is None:
        abnormal = bool(lesion_types) or bool(np.random.default_rng([seed, 3]).random() < 0.5)
    elif not abnormal and lesion_types:
        raise PhantomError("lesion_types were given for a phantom requested as normal "
                           "(abnormal=False); drop one of the two.")
    img, lung, sides, anat = render_normal(seed, size)
    lesion_mask = np.zeros_like(lung)
    lesions: list[dict] = []
    if abnormal:
        rng_l = np.random.default_rng([seed, 1])
        types = _choose_types(rng_l, lesion_types)
        if types:
            dist = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 5)
            sub = img[::4, ::4][(sides[::4, ::4] == 0) & (img[::4, ::4] > anat["bg"] + 0.05)]
            soft = float(np.percentile(sub, 90))
            info = LungInfo(lung, sides, dist, soft)
            lesion_mask, lesions = add_lesions(img, info, rng_l, types)
    # acquisition: blur then quantum (Poisson-like) noise, same draws whatever the label
    rng_n = np.random.default_rng([seed, 2])
    sigma = anat["blur"] * size / 512.0
    img = cv2.GaussianBlur(np.clip(img, 0.0, 1.0), (0, 0), sigma)
    grain = rng_n.standard_normal((size, size), dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.6 * size / 512.0) * 1.6
    img = img + anat["noise"] * np.sqrt(np.clip(1.0 - img, 0.02, 1.0)) * grain
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return Phantom(img, lung, lesion_mask, int(bool(lesions)) if abnormal else 0, lesions, seed)


def _write_png_atomic(path: Path, array: np.ndarray) -> None:
    write_png(path, array)


def write_phantom_dataset(
    out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 512,
    abnormal_fraction: float = 0.5,
) -> Path:
    """Write ``n`` phantoms in the NLM Shenzhen layout; return the folder.

    ``CXR_png/PHANTOM_####_<label>.png``, ``mask/PHANTOM_####_<label>_mask.png`` (0/255),
    ``lesion_mask/PHANTOM_####_<label>_lesion.png`` (0/255) and ``manifest.csv``
    (filename,label,seed,lesion_types). Image ``i`` (from 0) uses seed ``seed + i``; exactly
    ``round(n * abnormal_fraction)`` images are abnormal, chosen by a permutation seeded by ``seed``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PhantomError(f"The number of phantoms must be a positive integer, got {n!r}.")
    if not 0.0 <= float(abnormal_fraction) <= 1.0:
        raise PhantomError(f"abnormal_fraction must lie in 0..1, got {abnormal_fraction!r}.")
    _check_args(seed, size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PhantomError(f"Cannot write a phantom dataset into {out}: it is a file.")
    for sub in ("CXR_png", "mask", "lesion_mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n_abn = int(round(n * float(abnormal_fraction)))
    order = np.random.default_rng([seed, n, 7]).permutation(n)
    abnormal = np.zeros(n, bool)
    abnormal[order[:n_abn]] = True
    width = max(4, len(str(n - 1)))
    rows = []
    for i in range(n):
        ph = make_phantom(seed + i, size, abnormal=bool(abnormal[i]))
        name = f"PHANTOM_{i:0{width}d}_{ph.label}"
        _write_png_atomic(out / "CXR_png" / f"{name}.png",
                          np.round(ph.image * 255.0).astype(np.uint8))
        _write_png_atomic(out / "mask" / f"{name}_mask.png", ph.lung_mask.astype(np.uint8) * 255)
        _write_png_atomic(out / "lesion_mask" / f"{name}_lesion.png",
                          ph.lesion_mask.astype(np.uint8) * 255)
        rows.append([f"{name}.png", ph.label, seed + i, ";".join(d["type"] for d in ph.lesions)])
    with atomic_file(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label", "seed", "lesion_types"])
        w.writerows(rows)
    return out
