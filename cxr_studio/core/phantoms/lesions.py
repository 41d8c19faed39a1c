"""Lesions for synthetic chest phantoms: each draws a change of intensity and its pixel mask.

Lesions are drawn in display space (0..1, bone bright) on the noise-free anatomy, before blur
and quantum noise, so their contrast over the local background is controlled directly.
Every lesion mask is clipped to the lung mask. The findings follow the paper's Fig. 1: nodules,
consolidation, cavitary lesion, pleural effusion and hyper-lucent cyst.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

LESION_TYPES = ("nodule", "consolidation", "cavity", "effusion", "cyst")


@dataclass
class LungInfo:
    """What lesion drawing needs to know about the anatomy (all in pixels of the image)."""

    lung_mask: np.ndarray  # bool (S, S)
    sides: np.ndarray  # int8 (S, S): 1 patient-right lung (image left), 2 patient-left, 0 none
    dist: np.ndarray  # float32 distance (px) to the nearest non-lung pixel
    soft_level: float  # display intensity of dense soft tissue (what fluid looks like)


def _window(size: int, cx: float, cy: float, half: float):
    """Slices of a square window around (cx, cy) clipped to the image, and the window's
    x, y offsets from the centre (float32 open grids)."""
    x0, x1 = max(0, int(cx - half)), min(size, int(cx + half) + 2)
    y0, y1 = max(0, int(cy - half)), min(size, int(cy + half) + 2)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    return (slice(y0, y1), slice(x0, x1)), xs, ys


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Band-limited noise in 0..1 (a cells x cells random grid upsampled smoothly)."""
    small = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _pick_centre(
    rng: np.random.Generator, info: LungInfo, radius_px: float, side: int | None,
    upper: bool = False,
) -> tuple[float, float, int]:
    """A random lung pixel at least ~radius from the lung border (upper half when asked)."""
    need = max(1.0, radius_px + 1.0)
    ok = info.dist >= need
    if side is not None:
        ok &= info.sides == side
    if upper:
        ys = np.nonzero(ok.any(axis=1))[0]
        if ys.size:
            mid = ys[0] + 0.5 * (ys[-1] - ys[0])
            up = ok.copy()
            up[int(mid):] = False
            if up.any():
                ok = up
    if not ok.any():  # fall back to the deepest lung pixel(s) on that side
        cand = info.dist * ((info.sides == side) if side is not None else 1)
        ok = cand >= cand.max() * 0.9
    yy, xx = np.nonzero(ok)
    k = int(rng.integers(len(yy)))
    return float(xx[k]), float(yy[k]), int(info.sides[yy[k], xx[k]])


def _side_name(side: int) -> str:
    return "right" if side == 1 else "left"


def _full_mask(shape: tuple[int, int], win: tuple[slice, slice], m: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[win] = m
    return out


def nodule(img: np.ndarray, info: LungInfo, rng: np.random.Generator, side: int | None) -> dict:
    """Round opacity: the projection of a sphere, a little lobulated."""
    s = img.shape[0]
    r = float(rng.uniform(0.012, 0.035)) * s
    cx, cy, side = _pick_centre(rng, info, r, side)
    c = float(rng.uniform(0.10, 0.25))
    win, x, y = _window(s, cx, cy, 1.2 * r + 2)
    lob = 1.0 + 0.08 * np.sin(3 * np.arctan2(y, x) + rng.uniform(0, 6.3)) * rng.random()
    d = np.sqrt(x * x + y * y) / (r * lob)
    prof = np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0)) ** 0.6
    img[win] += c * prof
    return {"type": "nodule", "centre": (cx, cy), "size": r, "side": _side_name(side),
            "contrast": c, "mask": _full_mask(img.shape, win, d < 1.0)}


def consolidation(img: np.ndarray, info: LungInfo, rng: np.random.Generator,
                  side: int | None) -> dict:
    """Patchy, fluffy opacity of confluent acinar blobs, often in an upper zone (as in TB)."""
    s = img.shape[0]
    r = float(rng.uniform(0.045, 0.09)) * s
    cx, cy, side = _pick_centre(rng, info, 0.6 * r, side, upper=rng.random() < 0.7)
    c = float(rng.uniform(0.10, 0.22))
    ax, ay = r * rng.uniform(0.8, 1.3), r * rng.uniform(0.7, 1.1)
    win, x, y = _window(s, cx, cy, max(ax, ay) + 4)
    env = np.clip(1.0 - (x / ax) ** 2 - (y / ay) ** 2, 0.0, 1.0)
    shape = env.shape
    fluff = _smooth_noise(rng, shape, max(5, int(shape[0] / (0.22 * r)))) * 0.7 \
        + _smooth_noise(rng, shape, max(9, int(shape[0] / (0.1 * r)))) * 0.3
    field = np.sqrt(env) * (0.3 + fluff)
    prof = np.clip((field - 0.4) / 0.3, 0.0, 1.0)
    prof = cv2.GaussianBlur(prof, (0, 0), max(0.8, 0.05 * r)) * info.lung_mask[win]
    img[win] += c * prof
    return {"type": "consolidation", "centre": (cx, cy), "size": r, "side": _side_name(side),
            "contrast": c, "mask": _full_mask(img.shape, win, prof > 0.25)}


def cavity(img: np.ndarray, info: LungInfo, rng: np.random.Generator, side: int | None) -> dict:
    """Cavitary lesion: thick bright wall around a lucent (air) centre."""
    s = img.shape[0]
    r = float(rng.uniform(0.025, 0.05)) * s
    cx, cy, side = _pick_centre(rng, info, r, side, upper=rng.random() < 0.6)
    c = float(rng.uniform(0.15, 0.28))
    wall = float(rng.uniform(0.3, 0.5))
    win, x, y = _window(s, cx, cy, 1.2 * r + 2)
    irr = 1.0 + 0.1 * np.sin(2 * np.arctan2(y, x) + rng.uniform(0, 6.3)) * rng.random()
    d = np.sqrt(x * x + y * y) / (r * irr)
    inner = 1.0 - wall
    ring = np.sqrt(np.clip(1.0 - np.abs(d - (1.0 - wall / 2)) / (wall / 2), 0.0, 1.0))
    hole = np.clip((inner - d) / (0.25 * inner), 0.0, 1.0)
    img[win] += c * ring - 0.3 * c * hole
    return {"type": "cavity", "centre": (cx, cy), "size": r, "side": _side_name(side),
            "contrast": c, "mask": _full_mask(img.shape, win, d < 1.0)}


def cyst(img: np.ndarray, info: LungInfo, rng: np.random.Generator, side: int | None) -> dict:
    """Hyper-lucent cyst: darker than the lung around it, with a thin bright wall."""
    s = img.shape[0]
    r = float(rng.uniform(0.025, 0.055)) * s
    cx, cy, side = _pick_centre(rng, info, r, side)
    c = float(rng.uniform(0.08, 0.18))
    win, x, y = _window(s, cx, cy, 1.2 * r + 3)
    d = np.sqrt((x / rng.uniform(0.9, 1.1)) ** 2 + y * y) / r
    t = max(1.2, 0.004 * s) / r  # wall thickness (fraction of r)
    wall = np.clip(1.0 - np.abs(d - 1.0) / t, 0.0, 1.0)
    inside = np.clip((1.0 - d) / (2 * t), 0.0, 1.0)
    img[win] += -c * inside + 0.6 * c * wall
    return {"type": "cyst", "centre": (cx, cy), "size": r, "side": _side_name(side),
            "contrast": c, "mask": _full_mask(img.shape, win, d < 1.0)}


def effusion(img: np.ndarray, info: LungInfo, rng: np.random.Generator,
             side: int | None) -> dict:
    """Pleural effusion: homogeneous basal opacity whose upper edge is a meniscus that rises
    laterally and blunts the costophrenic angle."""
    s = img.shape[0]
    if side is None:
        side = int(rng.integers(1, 3))
    ys, xs = np.nonzero(info.sides == side)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    height = bottom - top
    level = bottom - float(rng.uniform(0.14, 0.32)) * height  # at the medial side
    rise = float(rng.uniform(0.12, 0.25)) * height  # meniscus climbs laterally
    y0 = max(0, int(level - rise) - 4)
    win = (slice(y0, bottom + 1), slice(left, right + 1))
    lung = info.sides[win] == side
    x = np.arange(left, right + 1, dtype=np.float32)[None, :]
    y = np.arange(y0, bottom + 1, dtype=np.float32)[:, None]
    span = max(1, right - left)
    lateral = (right - x) / span if side == 1 else (x - left) / span
    menisc = level - rise * np.clip(lateral, 0.0, 1.0) ** 2
    soft = max(2.0, 0.012 * s)
    a = float(rng.uniform(0.3, 0.7))
    prof = np.clip((y - menisc) / soft, 0.0, 1.0).astype(np.float32)
    prof = cv2.GaussianBlur(prof, (0, 0), 0.6 * soft) * lung  # denser towards the base
    prof *= 0.75 + 0.25 * np.clip((y - menisc) / (0.5 * (bottom - level) + 1), 0.0, 1.0)
    sub = img[win]
    before = float(sub[prof > 0.3].mean()) if (prof > 0.3).any() else float(sub[lung].mean())
    sub += a * prof * np.clip(info.soft_level - sub, 0.0, None)
    m = (prof > 0.3) & lung
    yy, xx = np.nonzero(m)
    centre = (float(xx.mean() + left), float(yy.mean() + y0)) if len(yy) else \
        (float(xs.mean()), float(bottom))
    return {"type": "effusion", "centre": centre, "size": float(bottom - level),
            "side": _side_name(side), "contrast": a * max(0.0, info.soft_level - before),
            "mask": _full_mask(img.shape, win, m)}


DRAWERS: dict[str, Callable[..., dict[str, Any]]] = {
    "nodule": nodule, "consolidation": consolidation, "cavity": cavity,
    "effusion": effusion, "cyst": cyst,
}


def add_lesions(
    img: np.ndarray, info: LungInfo, rng: np.random.Generator, types: list[str]
) -> tuple[np.ndarray, list[dict]]:
    """Draw the lesions in ``types`` into ``img`` (in place); return (lesion mask, lesion dicts).

    Each dict has ``type``, ``centre`` (x, y) pixels, ``size`` (radius, or height for an
    effusion, pixels), ``radius`` (for an effusion that of a disc of its area), ``side`` (the
    patient's side: "right" is the image's left), ``contrast`` (peak change drawn) and ``area``
    (pixels of its mask).
    """
    lesion_mask = np.zeros(img.shape, bool)
    lesions: list[dict] = []
    effusion_sides: set[int] = set()
    for t in types:
        side: int | None = None
        if t == "effusion":
            free = [sd for sd in (1, 2) if sd not in effusion_sides] or [1, 2]
            side = int(free[int(rng.integers(len(free)))])
            effusion_sides.add(side)
        d = DRAWERS[t](img, info, rng, side)
        m = d.pop("mask") & info.lung_mask
        if not m.any():  # tiny lesion clipped away: mark its centre pixel (inside the lung)
            cx, cy = int(round(d["centre"][0])), int(round(d["centre"][1]))
            if info.lung_mask[cy, cx]:
                m[cy, cx] = True
        lesion_mask |= m
        d["centre"] = (round(d["centre"][0], 2), round(d["centre"][1], 2))
        d["size"] = round(float(d["size"]), 2)
        d["contrast"] = round(float(d["contrast"]), 4)
        d["area"] = int(m.sum())
        d["radius"] = d["size"] if t != "effusion" else round(float(np.sqrt(d["area"] / np.pi)), 2)
        lesions.append(d)
    return lesion_mask, lesions
