"""Lung-mask data for the segmenter: find (image, mask) pairs in NLM or phantom layouts, load them at
the segmenter's resolution, split them by a seed, and augment them.

Layouts: Montgomery (``CXR_png/X.png`` + ``ManualMask/leftMask/X.png`` and ``rightMask/X.png``,
merged), Shenzhen and our phantoms (``CXR_png/X.png`` + ``mask/X_mask.png``; images without a mask
are skipped). A root may also be a parent folder holding such sets (e.g. ``nlm-tb/``).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.imaging.masks import read_mask as core_read_mask

from ..core.imaging.io import read_image
from ..core.pipeline import PreprocessSpec, preprocess
from ..core.atomic import strict_json, write_text_atomic


@dataclass(frozen=True)
class MaskPair:
    image: Path
    masks: tuple[Path, ...]  # merged by logical or
    dataset: str  # "montgomery", "shenzhen" or the folder name


def _set_roots(root: Path) -> list[Path]:
    if (root / "CXR_png").is_dir():
        return [root]
    subs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "CXR_png").is_dir())
    if not subs:
        raise ValueError(f"{root} holds no CXR_png folder (expected an NLM Montgomery/Shenzhen or phantom layout).")
    return subs


def _dataset_name(root: Path) -> str:
    name = root.name.lower()
    if "montgomery" in name:
        return "montgomery"
    if "china" in name or "shenzhen" in name:
        return "shenzhen"
    return name


def find_mask_pairs(roots: list[str | Path]) -> list[MaskPair]:
    """Every radiograph with a lung mask under the given roots, sorted by path."""
    pairs: list[MaskPair] = []
    for r in roots:
        r = Path(r)
        if not r.is_dir():
            raise ValueError(f"Data folder {r} does not exist.")
        for s in _set_roots(r):
            ds = _dataset_name(s)
            for img in sorted((s / "CXR_png").glob("*.png")):
                left = s / "ManualMask" / "leftMask" / img.name
                right = s / "ManualMask" / "rightMask" / img.name
                single = s / "mask" / f"{img.stem}_mask.png"
                if left.exists() and right.exists():
                    pairs.append(MaskPair(img, (left, right), ds))
                elif single.exists():
                    pairs.append(MaskPair(img, (single,), ds))
    if not pairs:
        raise ValueError(f"No radiograph with a lung mask found under {', '.join(map(str, roots))}.")
    return pairs


def read_mask(pair: MaskPair) -> np.ndarray:
    """The pair's full-resolution bool mask (the one mask reader, ``core.imaging.masks``)."""
    return core_read_mask(list(pair.masks))


def manifest_hash(pairs: list[MaskPair]) -> str:
    """SHA-256 over the sorted (file name, size) of every image and mask used."""
    h = hashlib.sha256()
    for p in sorted(pairs, key=lambda q: str(q.image)):
        for f in (p.image, *p.masks):
            h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()


def split_pairs(pairs: list[MaskPair], seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, list[MaskPair]]:
    """Seeded split per dataset (each set keeps its share in train/val/test)."""
    out: dict[str, list[MaskPair]] = {"train": [], "val": [], "test": []}
    by_ds: dict[str, list[MaskPair]] = {}
    for p in pairs:
        by_ds.setdefault(p.dataset, []).append(p)
    for ds in sorted(by_ds):
        items = sorted(by_ds[ds], key=lambda q: q.image.name)
        random.Random(f"{seed}:{ds}").shuffle(items)
        n = len(items)
        n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
        out["test"] += items[:n_test]
        out["val"] += items[n_test:n_test + n_val]
        out["train"] += items[n_test + n_val:]
    return out


def write_split(split: dict[str, list[MaskPair]], path: Path) -> None:
    data = {k: [str(p.image) for p in v] for k, v in split.items()}
    write_text_atomic(path, strict_json(data, indent=1))


def load_arrays(pairs: list[MaskPair], spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Images as the segmenter sees them (N, S, S) float32 0..1 (before normalisation) and masks
    (N, S, S) float32 0..1 (area-resampled), S = spec.input_size."""
    s = spec.input_size
    xs = np.empty((len(pairs), s, s), np.float32)
    ys = np.empty((len(pairs), s, s), np.float32)
    for i, p in enumerate(pairs):
        rg = read_image(p.image)
        xs[i] = preprocess(rg, spec).display_input
        m = read_mask(p).astype(np.float32)
        if m.shape != rg.shape:
            raise ValueError(f"Mask of {p.image.name} is {m.shape[::-1]}, the image {rg.shape[::-1]}.")
        ys[i] = cv2.resize(m, (s, s), interpolation=cv2.INTER_AREA)
    return xs, ys


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Small rotation, scaling and shift (same for image and mask), then contrast and gamma."""
    s = x.shape[0]
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-0.05, 0.05, 2) * s
    mat = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    mat[:, 2] += (tx, ty)
    xa = cv2.warpAffine(x, mat, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    ya = cv2.warpAffine(y, mat, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    xa = np.clip(xa, 0, 1) ** gamma
    c = rng.uniform(0.8, 1.2)
    xa = np.clip((xa - 0.5) * c + 0.5 + rng.uniform(-0.05, 0.05), 0, 1)
    return xa.astype(np.float32), ya.astype(np.float32)
