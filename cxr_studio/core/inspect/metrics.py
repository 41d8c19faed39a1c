"""Localisation scores of a heatmap against a ground-truth mask (e.g. a phantom's lesion mask).

All functions take a 2-D map and a boolean mask of the same shape (map it onto the original grid
first, e.g. with ``saliency.to_original``). Negative map values count as zero.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _check(m: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(m, dtype=np.float64)
    b = np.asarray(mask)
    if a.ndim != 2:
        raise ValueError(f"The map must be 2-D, got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"The map {a.shape} and the mask {b.shape} must have the same shape; resample the map first")
    if not np.isfinite(a).all():
        raise ValueError("The map contains NaN or infinite values")
    b = b.astype(bool)
    if not b.any():
        raise ValueError("The ground-truth mask is empty; localisation needs at least one pixel inside it")
    return a, b


def pointing_game(m: Any, mask: Any) -> bool:
    """True when the map's peak lies inside the mask. With ties, every maximum must be inside
    (a flat map does not score unless the mask covers everything)."""
    a, b = _check(m, mask)
    peaks = a == a.max()
    return bool(b[peaks].all())


def energy_inside(m: Any, mask: Any) -> float:
    """Fraction of the map's (positive) total that lies inside the mask; 0 for an all-zero map."""
    a, b = _check(m, mask)
    a = np.clip(a, 0.0, None)
    total = float(a.sum())
    return 0.0 if total <= 0 else float(a[b].sum() / total)


def iou_at(m: Any, mask: Any, threshold: float) -> float:
    """Intersection over union of ``map >= threshold`` with the mask."""
    a, b = _check(m, mask)
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    pred = a >= t
    union = int(np.count_nonzero(pred | b))
    return float(np.count_nonzero(pred & b) / union)


def localisation_report(m: Any, mask: Any, threshold: float = 0.5) -> dict[str, Any]:
    """All scores at once, with the peak position (x, y) and the map area above the threshold."""
    a, b = _check(m, mask)
    r, c = np.unravel_index(int(np.argmax(a)), a.shape)
    return {
        "pointing_game": pointing_game(a, b),
        "energy_inside": energy_inside(a, b),
        "iou": iou_at(a, b, threshold),
        "threshold": float(threshold),
        "peak_xy": (int(c), int(r)),
        "area_above_threshold": float(np.mean(a >= threshold)),
        "mask_area": float(np.mean(b)),
    }
