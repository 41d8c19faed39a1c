"""Synthetic PA chest radiographs ("phantoms") with exact lung and lesion masks.

``make_phantom(seed, size=512, abnormal=None, lesion_types=None) -> Phantom`` draws one image;
``write_phantom_dataset(out_dir, n, ...)`` writes a folder in the NLM Shenzhen layout.

The anatomy is described in normalised model coordinates (u, v) in 0..1 (u to the image's right,
v down), then mapped to pixels through a small random similarity transform (shift, scale,
rotation). PA view: the patient's right lung is on the image's left, the heart bulges to the
image's right. Independent random streams are used for anatomy, label, lesions and noise, so
``make_phantom(s, abnormal=False)`` has exactly the anatomy and noise of ``make_phantom(s,
abnormal=True)``: the two differ only around the lesions.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

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


# ----------------------------------------------------------------------------- geometry
@dataclass
class _Frame:
    """Similarity transform between model coordinates (u, v in 0..1) and pixels."""

    size: int
    scale: float
    angle: float  # radians
    shift: tuple[float, float]

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) model (u, v) -> pixel (x, y) float."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        d = (np.asarray(pts, np.float64) - 0.5) * self.scale
        x = c * d[..., 0] - s * d[..., 1] + 0.5 + self.shift[0]
        y = s * d[..., 0] + c * d[..., 1] + 0.5 + self.shift[1]
        return np.stack([x, y], -1) * self.size - 0.5

    def grids(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Model coordinates (u, v) of the pixel centres of an n x n raster, float32 each."""
        p = (np.arange(n, dtype=np.float32) + 0.5) / n
        x = p[None, :] - 0.5 - self.shift[0]
        y = p[:, None] - 0.5 - self.shift[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (c * x + s * y) / self.scale + 0.5
        v = (-s * x + c * y) / self.scale + 0.5
        return u.astype(np.float32), v.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise, roughly zero-mean, unit-ish amplitude."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _up(a: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(a.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def _polys(canvas: np.ndarray, frame: _Frame, lines: list[np.ndarray], value: int,
           width: float) -> None:
    """Draw polylines given in model coordinates on a uint8 canvas (anti-aliased)."""
    if not lines:
        return
    if len({len(p) for p in lines}) == 1:  # one transform for all lines of equal length
        px = list(np.round(frame.to_px(np.stack(lines)) * 16).astype(np.int32))
    else:
        px = [np.round(frame.to_px(p) * 16).astype(np.int32) for p in lines]  # 4 fraction bits
    w = max(1, int(round(width * frame.size * frame.scale)))
    cv2.polylines(canvas, px, False, int(value), w, cv2.LINE_AA, shift=4)


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (slivers cut off by the heart go)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


# ----------------------------------------------------------------------------- anatomy
def _lung_field(u: np.ndarray, v: np.ndarray, p: dict[str, float],
                mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """Signed inside-ness (model units, > 0 inside) of one lung field: between a rounded
    apex / lateral wall and the diaphragm dome. Parameters describe the image-left lung;
    ``mirror`` flips it to the image's right. Also returns where the diaphragm lies below it."""
    x = 1.0 - u if mirror else u
    xa, xl, xm = p["apex_x"], p["lat_x"], p["med_x"]
    va, vw, vcp, vdome, vmed = p["apex_v"], p["wall_v"], p["cp_v"], p["dome_v"], p["med_v"]
    xd = p["dome_x"]
    # top: quarter ellipse from the apex down to the lateral wall; nearly flat medially
    t = np.clip((xa - x) / (xa - xl), 0.0, 1.0)
    top_lat = va + (vw - va) * (1.0 - np.sqrt(np.clip(1.0 - t ** 1.3, 0.0, 1.0)))
    tm = np.clip((x - xa) / (xm - xa), 0.0, 1.0)
    top = np.where(x < xa, top_lat, va + p["apex_med"] * tm * tm)
    # bottom: dome peaking at dome_x, deep costophrenic angle laterally
    tl = np.clip((xd - x) / (xd - xl), 0.0, 1.0)
    tr = np.clip((x - xd) / (xm - xd), 0.0, 1.0)
    bot = np.where(x < xd, vdome + (vcp - vdome) * tl ** 2.2, vdome + (vmed - vdome) * tr ** 1.6)
    bulge = p["bulge"] * ((v - 0.5 * (vw + vcp)) / 0.25) ** 2  # convex lateral wall
    f = np.minimum(np.minimum(x - xl - bulge, xm - x), np.minimum(v - top, bot - v))
    under = (v > bot) & (x > xl - 0.03) & (x < xm + 0.03)
    return f, under


def _draw_bones(rng: np.random.Generator, frame: _Frame,
                a: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(ribs, clavicles) as float images: posterior ribs curving down laterally with fainter
    anterior ribs sloping down medially; S-shaped clavicles."""
    s = frame.size
    post = np.zeros((s, s), np.uint8)
    ant = np.zeros((s, s), np.uint8)
    d = np.linspace(0.0, 1.0, 32)
    ta = np.linspace(0.0, 1.0, 16)
    for k in range(10):
        vk = a["rib_v0"] + a["rib_dv"] * k * (1.0 + 0.03 * k)
        reach = (0.2 + 0.2 * min(1.0, (k + 1) / 4.0)) * a["rib_reach"]
        curv = (3.2 - 0.16 * k) * a["rib_curv"]
        width = a["rib_w"] * (0.7 + 0.06 * min(k, 5))
        lines, alines = [], []
        for sign in (-1.0, 1.0):
            dd = d * reach
            uu = 0.5 + sign * (0.03 + dd)
            vv = vk + rng.normal(0, 0.004) - 0.3 * dd + curv * dd * dd
            lines.append(np.stack([uu, vv], 1))
            if k < 8:  # anterior rib: from the lateral end, sloping down medially, fainter
                au = uu[-1] - sign * ta * (0.2 + 0.01 * k)
                av = vv[-1] - 0.02 + 0.12 * ta + 0.04 * ta * ta
                alines.append(np.stack([au, av], 1))
        _polys(post, frame, lines, 255, width)
        _polys(post, frame, lines, 120, width * 0.55)  # medulla darker than the cortex
        _polys(ant, frame, alines, 255, width * 0.85)
    clav = np.zeros((s, s), np.uint8)
    tc = np.linspace(0.0, 1.0, 24)
    lines = []
    for sign in (-1.0, 1.0):  # S-shaped from the sternal notch to the shoulders
        cu = 0.5 + sign * (0.04 + tc * 0.36)
        cv = a["clav_v"] - 0.07 * tc + 0.02 * np.sin(tc * 2 * np.pi) * a["clav_s"]
        lines.append(np.stack([cu, cv], 1))
    _polys(clav, frame, lines, 255, 0.032)
    _polys(clav, frame, lines, 175, 0.014)
    ribs = (post.astype(np.float32) + 0.35 * ant.astype(np.float32)) * (1.0 / 255.0)
    return ribs, clav.astype(np.float32) * (1.0 / 255.0)


def _draw_vessels(rng: np.random.Generator, frame: _Frame) -> np.ndarray:
    """Branching vascular markings radiating from the hila, thinner and fainter outwards."""
    s = frame.size
    can = np.zeros((s, s), np.uint8)
    steps = 7
    segs: list[list[np.ndarray]] = [[] for _ in range(steps)]
    for sign, hu in ((-1.0, 0.41), (1.0, 0.59)):
        for _ in range(16):
            ang = rng.uniform(-1.3, 1.5)
            pu, pv = hu, 0.42 + rng.uniform(-0.05, 0.05)
            step = rng.uniform(0.022, 0.036)
            for j in range(steps):
                ang += rng.normal(0, 0.3)
                nu, nv = pu + sign * step * math.cos(ang), pv + step * math.sin(ang) * 0.9
                segs[j].append(np.array([[pu, pv], [nu, nv]]))
                pu, pv = nu, nv
    for j in range(steps):
        _polys(can, frame, segs[j], int(230 * (1 - j / (steps + 1))), 0.009 * (1 - j / steps) + 0.002)
    return cv2.GaussianBlur(can, (0, 0), max(0.7, s / 500)).astype(np.float32) * (1.0 / 255.0)


def _anatomy_params(rng: np.random.Generator) -> dict[str, float]:
    U = rng.uniform
    return {
        "body_hw": U(0.42, 0.5), "body_top": U(0.0, 0.07), "neck_hw": U(0.09, 0.12),
        "apex_v": U(0.12, 0.17), "wall_v": U(0.44, 0.55), "cp_v": U(0.73, 0.8),
        "dome_v": U(0.60, 0.66), "dome_drop": U(0.02, 0.05), "apex_med": U(0.04, 0.1),
        "lat_x": U(0.11, 0.16), "apex_x": U(0.32, 0.36), "med_x": U(0.445, 0.46),
        "dome_x": U(0.26, 0.32), "lat_x2": U(0.12, 0.17), "bulge": U(0.0, 0.02),
        "heart_cx": U(0.54, 0.57), "heart_cy": U(0.45, 0.75), "heart_rx": U(0.15, 0.19),
        "heart_ry": U(0.11, 0.14), "heart_rot": U(-0.5, -0.25),
        "med_w": U(0.045, 0.06), "knob": U(0.015, 0.035), "spine_w": U(0.028, 0.036),
        "rib_v0": U(0.09, 0.12), "rib_dv": U(0.052, 0.062), "rib_reach": U(0.9, 1.05),
        "rib_curv": U(0.85, 1.15), "rib_w": U(0.018, 0.024),
        "clav_v": U(0.17, 0.21), "clav_s": U(0.5, 1.3),
        "soft": U(0.68, 0.8), "lung_dark": U(0.42, 0.55), "bone": U(0.1, 0.17),
        "gamma": U(0.8, 1.25), "breast": U(0.0, 0.12), "noise": U(0.008, 0.022),
        "blur": U(0.5, 1.1), "bg": U(0.0, 0.08), "trachea": U(0.06, 0.12),
    }


def _render_normal(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Noise-free anatomy (display 0..1), lung mask, side labels (1 image-left lung, 2
    image-right) and the anatomy parameters. Smooth fields are computed on a 4x coarser
    raster and upsampled; edges that matter (lung borders, bones) are sharp at full size."""
    rng = np.random.default_rng([seed, 0])
    a = _anatomy_params(rng)
    # the heart sits on the left dome
    a["heart_cy"] = a["dome_v"] + a["dome_drop"] + 0.05 - a["heart_ry"] * a["heart_cy"]
    frame = _Frame(size, float(rng.uniform(0.9, 1.07)), float(rng.uniform(-0.06, 0.06)),
                   (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))))
    lo = max(32, size // 4)
    u, v = frame.grids(lo)
    px = 1.0 / (lo * frame.scale)  # one coarse pixel in model units

    # body: thickness grows with the distance from the skin; neck and sloping shoulders
    w = np.abs(u - 0.5)
    hw = a["body_hw"] + 0.05 - 0.05 * np.clip((v - a["body_top"] - 0.1) / 0.4, 0.0, 1.0)
    v_sh = a["body_top"] - 0.04 + 0.6 * np.maximum(w - a["neck_hw"] - 0.02, 0.0) ** 1.6
    k = 0.02  # smooth minimum rounds the shoulder tips
    f_body = -k * np.logaddexp(-(hw - w) / k, -(v - v_sh) / k)
    f_body = np.maximum(f_body, a["neck_hw"] - w)
    inside = np.clip(f_body / px + 0.5, 0.0, 1.0)
    body = np.sqrt(np.clip(f_body / 0.14, 0.0, 1.0))
    dens = (a["soft"] - 0.25 + 0.25 * body) * inside

    # lung fields, cut by the mediastinum and the heart
    keys = ("apex_v", "wall_v", "cp_v", "dome_v", "apex_med", "lat_x", "apex_x", "med_x",
            "dome_x", "bulge")
    p_r = {k: a[k] for k in keys}
    p_r["med_v"] = a["dome_v"] + 0.05
    p_l = dict(p_r, lat_x=a["lat_x2"], dome_v=a["dome_v"] + a["dome_drop"],
               cp_v=a["cp_v"] + a["dome_drop"] * 0.6, med_v=a["dome_v"] + a["dome_drop"] + 0.05,
               apex_v=a["apex_v"] + 0.01)
    du, dv = u - a["heart_cx"], v - a["heart_cy"]
    c, s = math.cos(a["heart_rot"]), math.sin(a["heart_rot"])
    hx, hy = (c * du + s * dv) / a["heart_rx"], (-s * du + c * dv) / a["heart_ry"]
    heart_r = np.sqrt(hx * hx + hy * hy)
    # mediastinum half-width: aortic knob, then widening into the heart (image right) and the
    # right atrium (image left)
    medw = a["med_w"] + np.where(
        u > 0.5, a["knob"] * np.exp(-(((v - 0.3) / 0.05) ** 2))
        + 0.05 * np.clip((v - 0.36) / 0.2, 0.0, 1.0), 0.015 * np.clip((v - 0.45) / 0.15, 0.0, 1.0))
    cut = np.minimum((heart_r - 1.0) * min(a["heart_rx"], a["heart_ry"]), np.abs(u - 0.5) - medw)
    f_r, under_r = _lung_field(u, v, p_r, mirror=False)
    f_l, under_l = _lung_field(u, v, p_l, mirror=True)
    f_r, f_l = np.minimum(f_r, cut), np.minimum(f_l, cut)
    lung_lo = ((f_r > 0) | (f_l > 0)).astype(np.float32)
    depth_lo = cv2.GaussianBlur(lung_lo, (0, 0), 0.05 * lo * frame.scale)
    # lung air seen beside the borders, but not through the diaphragm or the heart
    block = (under_r | under_l) | (heart_r < 1) | (np.abs(u - 0.5) < medw)
    leak_lo = 1.0 - cv2.GaussianBlur(block.astype(np.float32), (0, 0), 0.6)

    # mediastinum, heart, trachea, hila, spine (vertebral bodies), breasts, stomach gas
    med_soft = np.clip((medw + 0.02 - np.abs(u - 0.5)) / 0.03, 0.0, 1.0) * (v > 0.04)
    heart_soft = np.clip((1.0 - heart_r) / 0.12, 0.0, 1.0)
    abd = np.clip((v - a["dome_v"] - 0.01 - 0.6 * np.maximum(np.abs(u - 0.5) - 0.2, 0.0) ** 2)
                  / 0.07, 0.0, 1.0)
    dens += (0.12 * med_soft + 0.03 * heart_soft + 0.1 * abd) * inside
    tr = np.clip((0.017 - np.abs(u - 0.5 - 0.01 * (v - 0.1))) / 0.006, 0.0, 1.0)
    dens -= a["trachea"] * tr * np.clip((0.36 - v) / 0.04, 0.0, 1.0)
    for hu in (0.42, 0.585):
        hx, hy = (u - hu) / 0.035, (v - 0.42) / 0.06
        dens += 0.08 * np.clip(1.0 - hx * hx - hy * hy, 0.0, 1.0)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (v - a["rib_v0"]) / (a["rib_dv"] * 1.05))
    spine = np.clip((a["spine_w"] - np.abs(u - 0.5)) / 0.008, 0.0, 1.0)
    dens += 0.35 * a["bone"] * spine * (0.4 + 0.6 * vert ** 2)
    for bu in (0.27, 0.73):
        bx, by = (u - bu) / 0.2, (v - 0.74) / 0.15
        dens += a["breast"] * np.sqrt(np.clip(1 - bx * bx - by * by, 0, 1)) * (v > 0.6)
    gu = (u - 0.64) / 0.06
    gv = (v - (a["dome_v"] + a["dome_drop"] + 0.08)) / 0.035
    gas = np.sqrt(np.clip(1 - gu * gu - gv * gv, 0, 1)) * (f_l < 0) * (heart_r > 1)
    dens -= float(rng.uniform(0.04, 0.14)) * gas

    # full resolution: sharp lung borders, lung air, texture, vessels, bones
    fr, fl = _up(f_r, size), _up(f_l, size)
    right = _largest(fr > 0)
    left = _largest((fl > 0) & ~right)
    lung = right | left
    sides = np.where(right, 1, np.where(left, 2, 0)).astype(np.int8)
    blur = np.clip(_up(depth_lo, size) * 1.3, 0.0, 1.0)
    depth = np.where(lung, 0.25 + 0.75 * blur, 0.6 * blur * _up(leak_lo, size))
    texture = _smooth_noise(rng, size, 12) * 0.06 + _smooth_noise(rng, size, 48) * 0.04
    img = _up(dens, size)
    img -= a["lung_dark"] * depth * (1.0 + texture)
    # bones and vessels are drawn at half size (they are soft-edged anyway) and upsampled
    dframe = _Frame(max(min(size, 256), size // 2), frame.scale, frame.angle, frame.shift)
    img += 0.16 * _up(_draw_vessels(rng, dframe), size) * depth
    inside_f = _up(inside, size)
    ribs, clav = _draw_bones(rng, dframe, a)
    img += a["bone"] * inside_f * (_up(ribs, size) * (0.3 + 0.7 * depth) + 0.55 * _up(clav, size))
    img = np.maximum(img, 0.0)
    k8 = img * np.float32(1.0 / 0.97)
    k8 *= k8
    k8 *= k8
    k8 *= k8
    k8 += 1.0
    img /= np.sqrt(np.sqrt(np.sqrt(k8)))  # soft knee x / (1 + (x/0.97)^8)^(1/8): no clipped whites
    img = img ** a["gamma"]
    img = a["bg"] + (1.0 - a["bg"]) * img
    return img.astype(np.float32), lung, sides, a


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
    img, lung, sides, a = _render_normal(seed, size)
    lesion_mask = np.zeros_like(lung)
    lesions: list[dict] = []
    if abnormal:
        rng_l = np.random.default_rng([seed, 1])
        types = _choose_types(rng_l, lesion_types)
        if types:
            dist = cv2.distanceTransform(lung.astype(np.uint8), cv2.DIST_L2, 5)
            sub = img[::4, ::4][(sides[::4, ::4] == 0) & (img[::4, ::4] > a["bg"] + 0.05)]
            soft = float(np.percentile(sub, 90))
            info = LungInfo(lung, sides, dist, soft)
            lesion_mask, lesions = add_lesions(img, info, rng_l, types)
    # acquisition: blur then quantum (Poisson-like) noise, same draws whatever the label
    rng_n = np.random.default_rng([seed, 2])
    sigma = a["blur"] * size / 512.0
    img = cv2.GaussianBlur(np.clip(img, 0.0, 1.0), (0, 0), sigma)
    grain = rng_n.standard_normal((size, size), dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.6 * size / 512.0) * 1.6
    img = img + a["noise"] * np.sqrt(np.clip(1.0 - img, 0.02, 1.0)) * grain
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
