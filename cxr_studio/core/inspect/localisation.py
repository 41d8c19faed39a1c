"""Lesion-level scores of heatmaps over many images: pointing game with a tolerance, energy inside,
IoU curves for a threshold chosen on other images (CheXlocalize), 95 % bootstrap intervals, and the
baselines a map must beat (a random point in the lungs or the image, the population prior).

Maps and masks are on the original radiograph. Maps are never clipped to the lungs: lesions
(effusions, collapsed lung) may lie outside the lung masks. Per-image scores come from `metrics`.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from cxr_studio.core.inspect.metrics import _check, energy_inside

REFERENCE_SIDE = 512  # the tolerance is given in pixels of a 512-pixel image
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95, CheXlocalize-style grid
PRIOR_GRID = 128  # the population prior is learned on masks resampled to this square grid


def tolerance_for(shape: tuple[int, int], tolerance_px: float) -> int:
    """``tolerance_px`` (pixels at 512) in pixels of an image of ``shape``."""
    return int(round(float(tolerance_px) * max(shape[:2]) / REFERENCE_SIDE))


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated by a disc of radius ``px`` (bool)."""
    m = np.asarray(mask).astype(np.uint8)
    if px > 0:
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)))
    return m > 0


def share_in_reach(mask: np.ndarray, reach: np.ndarray) -> tuple[float, bool]:
    """(share of ``mask`` inside ``reach``, whether any of it is): both bool on the original grid.
    ``reach`` is where a layer's map can be non-zero (its cells' centres and half a stride around
    them); a peak can only land there, so a lesion wholly outside can never be pointed at."""
    m = np.asarray(mask, bool)
    n = int(m.sum())
    inside = int(np.count_nonzero(m & np.asarray(reach, bool)))
    return (inside / n if n else 0.0), inside > 0


def iou_curve(m: Any, mask: Any, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """IoU of ``map >= t`` with ``mask`` for every threshold (the map is divided by its max first,
    so thresholds are fractions of the peak)."""
    a, b = _check(m, mask)
    hi = float(a.max())
    a = a / hi if hi > 0 else np.zeros_like(a)
    out = np.empty(len(thresholds), np.float64)
    nb = int(b.sum())
    for i, t in enumerate(thresholds):
        pred = a >= t
        inter = int(np.count_nonzero(pred & b))
        out[i] = inter / (int(np.count_nonzero(pred)) + nb - inter)
    return out


def pointing_hit(m: Any, target: Any) -> float:
    """Pointing game of one map against ``target`` (the grown lesion): 1.0 / 0.0 when the map has a
    single maximum; with ties (a blocky occlusion map, a flat map) the share of the maxima inside,
    i.e. the expected hit of a peak picked at random among them (a flat map scores as a uniformly
    random point does)."""
    a, b = _check(m, target)
    return float(b[a == a.max()].mean())


def score_map(m: np.ndarray, lesion: np.ndarray, tolerance_px: float) -> dict[str, Any]:
    """Pointing hit (`pointing_hit` against the lesion grown by the scaled tolerance), energy
    inside (ungrown lesion) and the IoU curve over `THRESHOLDS` of one map on the original image."""
    tol = tolerance_for(lesion.shape, tolerance_px)
    return {"hit": pointing_hit(m, grow(lesion, tol)), "energy": energy_inside(m, lesion),
            "iou_curve": iou_curve(m, lesion)}


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling images)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [float(lo), float(hi)]


def best_threshold(curves: np.ndarray) -> float:
    """The threshold of `THRESHOLDS` with the largest mean IoU over ``curves`` (n, len(THRESHOLDS))."""
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError("choosing a threshold needs IoU curves of at least one image")
    return float(THRESHOLDS[int(np.argmax(c.mean(axis=0)))])


def ious_at_chosen(curves: np.ndarray, choose_from: np.ndarray | None) -> tuple[np.ndarray, list[float]]:
    """Per-image IoU at the threshold chosen on ``choose_from`` (validation curves), or, when that
    is None, leave-one-out: image i at the threshold best on every other image. Returns (ious,
    thresholds used)."""
    c = np.asarray(curves, dtype=np.float64)
    if choose_from is not None and len(choose_from):
        t = best_threshold(choose_from)
        i = THRESHOLDS.index(t)
        return c[:, i], [t]
    if c.shape[0] < 2:
        raise ValueError("leave-one-out thresholds need at least two images")
    total = c.sum(axis=0)
    idx = [int(np.argmax(total - c[j])) for j in range(c.shape[0])]
    return c[np.arange(c.shape[0]), idx], sorted({THRESHOLDS[i] for i in idx})


def uniform_scores(region: np.ndarray, lesion: np.ndarray, tolerance_px: float) -> dict[str, float]:
    """A random point / flat map over ``region`` (the lungs, or the whole image): the probability
    that the point hits the grown lesion, and the flat map's energy inside the lesion (exact)."""
    r = np.asarray(region, bool)
    les = np.asarray(lesion, bool)
    if not r.any():
        raise ValueError("the region of a uniform baseline is empty")
    grown = grow(les, tolerance_for(les.shape, tolerance_px))
    n = float(r.sum())
    return {"hit": float((r & grown).sum() / n), "energy": float((r & les).sum() / n)}


def to_prior_grid(mask: np.ndarray) -> np.ndarray:
    """A lesion mask as its coverage on the `PRIOR_GRID` square (normalised image coordinates)."""
    return cv2.resize(np.asarray(mask, np.float32), (PRIOR_GRID, PRIOR_GRID), interpolation=cv2.INTER_AREA)


def population_prior_points(grids: Sequence[np.ndarray]) -> np.ndarray:
    """For every image, the normalised (u, v) of the most lesion-dense point of the OTHER images'
    masks (leave-one-out), (n, 2) in 0..1. Needs at least two images."""
    g = np.asarray(grids, dtype=np.float64)
    if g.shape[0] < 2:
        raise ValueError("the population prior needs lesion masks of at least two images")
    total = g.sum(axis=0)
    out = np.empty((g.shape[0], 2))
    for i in range(g.shape[0]):
        r, c = np.unravel_index(int(np.argmax(total - g[i])), total.shape)
        out[i] = ((c + 0.5) / PRIOR_GRID, (r + 0.5) / PRIOR_GRID)
    return out


def prior_hit(uv: np.ndarray, lesion: np.ndarray, tolerance_px: float) -> bool:
    """Whether the normalised point ``uv`` lies in ``lesion`` grown by the scaled tolerance."""
    h, w = lesion.shape
    grown = grow(lesion, tolerance_for(lesion.shape, tolerance_px))
    x = int(np.clip(np.floor(uv[0] * w), 0, w - 1))
    y = int(np.clip(np.floor(uv[1] * h), 0, h - 1))
    return bool(grown[y, x])


def summarise(rows: Sequence[dict[str, Any]], val_curves: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """Pointing game, energy and mIoU (each with a 95 % interval) of per-image `score_map` rows."""
    if not rows:
        return {"n": 0}
    hits = np.array([float(r["hit"]) for r in rows])
    energy = np.array([r["energy"] for r in rows])
    curves = np.stack([r["iou_curve"] for r in rows])
    out: dict[str, Any] = {"n": len(rows), "pointing_game": float(hits.mean()),
                           "pointing_ci": bootstrap_ci(hits, seed=seed),
                           "energy_inside": float(energy.mean()), "energy_ci": bootstrap_ci(energy, seed=seed)}
    if val_curves is not None and len(val_curves) or len(rows) >= 2:
        ious, ts = ious_at_chosen(curves, val_curves)
        out.update(miou=float(ious.mean()), miou_ci=bootstrap_ci(ious, seed=seed),
                   iou_threshold=ts[0] if len(ts) == 1 else ts,
                   threshold_source="validation" if val_curves is not None and len(val_curves) else "leave-one-out")
    return out
