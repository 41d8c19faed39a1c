"""The anatomy of a phantom (``phantom.make_phantom``): a normal PA chest drawn from one seed.

``render_normal(seed, size)`` gives the noise-free image, the lung mask and the lung sides. The
anatomy lives in model coordinates (u, v in 0..1, u to the image's right, v down) mapped to pixels by
a random similarity ``Frame``. Smooth fields (body, lung fields, mediastinum, soft tissue) are
computed on a 4x coarser raster and upsampled; edges that matter (lung borders, bones) are sharp at
full size. The steps draw from one random stream in a fixed order - anatomy parameters, frame,
stomach gas, lung texture, vessels, bones - so each seed always gives the same image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np


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
                anat: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(ribs, clavicles) as float images: posterior ribs curving down laterally with fainter
    anterior ribs sloping down medially; S-shaped clavicles."""
    s = frame.size
    post = np.zeros((s, s), np.uint8)
    ant = np.zeros((s, s), np.uint8)
    d = np.linspace(0.0, 1.0, 32)
    ta = np.linspace(0.0, 1.0, 16)
    for k in range(10):
        vk = anat["rib_v0"] + anat["rib_dv"] * k * (1.0 + 0.03 * k)
        reach = (0.2 + 0.2 * min(1.0, (k + 1) / 4.0)) * anat["rib_reach"]
        curv = (3.2 - 0.16 * k) * anat["rib_curv"]
        width = anat["rib_w"] * (0.7 + 0.06 * min(k, 5))
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
        cv = anat["clav_v"] - 0.07 * tc + 0.02 * np.sin(tc * 2 * np.pi) * anat["clav_s"]
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




# ----------------------------------------------------------------------------- the steps of render_normal
def _random_frame(rng: np.random.Generator, size: int) -> _Frame:
    """Scale, rotation and shift of the patient in the image."""
    return _Frame(size, float(rng.uniform(0.9, 1.07)), float(rng.uniform(-0.06, 0.06)),
                  (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))))


def _body(u: np.ndarray, v: np.ndarray, anat: dict[str, float], px: float) -> tuple[np.ndarray, np.ndarray]:
    """(inside, density): the body outline as 0..1 coverage (anti-aliased over one coarse pixel
    ``px``), neck and sloping shoulders; its soft-tissue density grows with the distance from the skin."""
    w = np.abs(u - 0.5)
    half_width = anat["body_hw"] + 0.05 - 0.05 * np.clip((v - anat["body_top"] - 0.1) / 0.4, 0.0, 1.0)
    shoulder_v = anat["body_top"] - 0.04 + 0.6 * np.maximum(w - anat["neck_hw"] - 0.02, 0.0) ** 1.6
    k = 0.02  # smooth minimum rounds the shoulder tips
    f_body = -k * np.logaddexp(-(half_width - w) / k, -(v - shoulder_v) / k)
    f_body = np.maximum(f_body, anat["neck_hw"] - w)
    inside = np.clip(f_body / px + 0.5, 0.0, 1.0)
    thickness = np.sqrt(np.clip(f_body / 0.14, 0.0, 1.0))
    return inside, (anat["soft"] - 0.25 + 0.25 * thickness) * inside


def _lung_params(anat: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """``_lung_field`` parameters of the patient's right lung (image left) and left lung (image
    right, mirrored), whose dome sits lower under the heart."""
    keys = ("apex_v", "wall_v", "cp_v", "dome_v", "apex_med", "lat_x", "apex_x", "med_x",
            "dome_x", "bulge")
    right = {k: anat[k] for k in keys}
    right["med_v"] = anat["dome_v"] + 0.05
    left = dict(right, lat_x=anat["lat_x2"], dome_v=anat["dome_v"] + anat["dome_drop"],
                cp_v=anat["cp_v"] + anat["dome_drop"] * 0.6, med_v=anat["dome_v"] + anat["dome_drop"] + 0.05,
                apex_v=anat["apex_v"] + 0.01)
    return right, left


def _heart_radius(u: np.ndarray, v: np.ndarray, anat: dict[str, float]) -> np.ndarray:
    """Elliptic radius around the heart's centre (< 1 inside the tilted heart ellipse)."""
    du, dv = u - anat["heart_cx"], v - anat["heart_cy"]
    c, s = math.cos(anat["heart_rot"]), math.sin(anat["heart_rot"])
    hx, hy = (c * du + s * dv) / anat["heart_rx"], (-s * du + c * dv) / anat["heart_ry"]
    return np.sqrt(hx * hx + hy * hy)


def _mediastinum_half_width(u: np.ndarray, v: np.ndarray, anat: dict[str, float]) -> np.ndarray:
    """Aortic knob, then widening into the heart (image right) and the right atrium (image left)."""
    return anat["med_w"] + np.where(
        u > 0.5, anat["knob"] * np.exp(-(((v - 0.3) / 0.05) ** 2))
        + 0.05 * np.clip((v - 0.36) / 0.2, 0.0, 1.0), 0.015 * np.clip((v - 0.45) / 0.15, 0.0, 1.0))


class _CoarseLungs(NamedTuple):
    right: np.ndarray  # signed inside-ness of the patient's right lung field, cut by mediastinum and heart
    left: np.ndarray  # ... and of the left one
    heart_r: np.ndarray  # _heart_radius
    med_half_width: np.ndarray  # _mediastinum_half_width
    depth: np.ndarray  # how deep in the lungs (blurred lung coverage)
    leak: np.ndarray  # where lung air shows beside the borders (not through diaphragm or heart)


def _lung_fields(u: np.ndarray, v: np.ndarray, anat: dict[str, float], depth_sigma: float) -> _CoarseLungs:
    """Both lung fields, cut by the mediastinum and the heart, on the coarse raster."""
    right_p, left_p = _lung_params(anat)
    heart_r = _heart_radius(u, v, anat)
    medw = _mediastinum_half_width(u, v, anat)
    cut = np.minimum((heart_r - 1.0) * min(anat["heart_rx"], anat["heart_ry"]), np.abs(u - 0.5) - medw)
    f_r, under_r = _lung_field(u, v, right_p, mirror=False)
    f_l, under_l = _lung_field(u, v, left_p, mirror=True)
    f_r, f_l = np.minimum(f_r, cut), np.minimum(f_l, cut)
    lung_lo = ((f_r > 0) | (f_l > 0)).astype(np.float32)
    depth = cv2.GaussianBlur(lung_lo, (0, 0), depth_sigma)
    block = (under_r | under_l) | (heart_r < 1) | (np.abs(u - 0.5) < medw)
    leak = 1.0 - cv2.GaussianBlur(block.astype(np.float32), (0, 0), 0.6)
    return _CoarseLungs(f_r, f_l, heart_r, medw, depth, leak)


def _add_soft_tissue(dens: np.ndarray, rng: np.random.Generator, u: np.ndarray, v: np.ndarray,
                     anat: dict[str, float], inside: np.ndarray, lungs: _CoarseLungs) -> None:
    """Into the coarse density, in place: mediastinum, heart and abdomen; the trachea's air; the
    hila; the spine (vertebral bodies); breasts; stomach gas under the left dome."""
    med_soft = np.clip((lungs.med_half_width + 0.02 - np.abs(u - 0.5)) / 0.03, 0.0, 1.0) * (v > 0.04)
    heart_soft = np.clip((1.0 - lungs.heart_r) / 0.12, 0.0, 1.0)
    abd = np.clip((v - anat["dome_v"] - 0.01 - 0.6 * np.maximum(np.abs(u - 0.5) - 0.2, 0.0) ** 2)
                  / 0.07, 0.0, 1.0)
    dens += (0.12 * med_soft + 0.03 * heart_soft + 0.1 * abd) * inside
    trachea = np.clip((0.017 - np.abs(u - 0.5 - 0.01 * (v - 0.1))) / 0.006, 0.0, 1.0)
    dens -= anat["trachea"] * trachea * np.clip((0.36 - v) / 0.04, 0.0, 1.0)
    for hilum_u in (0.42, 0.585):
        hx, hy = (u - hilum_u) / 0.035, (v - 0.42) / 0.06
        dens += 0.08 * np.clip(1.0 - hx * hx - hy * hy, 0.0, 1.0)
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * (v - anat["rib_v0"]) / (anat["rib_dv"] * 1.05))
    spine = np.clip((anat["spine_w"] - np.abs(u - 0.5)) / 0.008, 0.0, 1.0)
    dens += 0.35 * anat["bone"] * spine * (0.4 + 0.6 * vertebrae ** 2)
    for breast_u in (0.27, 0.73):
        bx, by = (u - breast_u) / 0.2, (v - 0.74) / 0.15
        dens += anat["breast"] * np.sqrt(np.clip(1 - bx * bx - by * by, 0, 1)) * (v > 0.6)
    gu = (u - 0.64) / 0.06
    gv = (v - (anat["dome_v"] + anat["dome_drop"] + 0.08)) / 0.035
    gas = np.sqrt(np.clip(1 - gu * gu - gv * gv, 0, 1)) * (lungs.left < 0) * (lungs.heart_r > 1)
    dens -= float(rng.uniform(0.04, 0.14)) * gas


def _sharp_lungs(lungs: _CoarseLungs, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lung mask, sides, depth) at full size: sharp borders, one component per lung (slivers go),
    sides 1 for the image-left lung and 2 for the image-right one."""
    right = _largest(_up(lungs.right, size) > 0)
    left = _largest((_up(lungs.left, size) > 0) & ~right)
    lung = right | left
    sides = np.where(right, 1, np.where(left, 2, 0)).astype(np.int8)
    blur = np.clip(_up(lungs.depth, size) * 1.3, 0.0, 1.0)
    depth = np.where(lung, 0.25 + 0.75 * blur, 0.6 * blur * _up(lungs.leak, size))
    return lung, sides, depth


def _lung_air(rng: np.random.Generator, dens: np.ndarray, depth: np.ndarray, anat: dict[str, float],
              size: int) -> np.ndarray:
    """The density at full size, darkened by lung air with a mottled texture."""
    texture = _smooth_noise(rng, size, 12) * 0.06 + _smooth_noise(rng, size, 48) * 0.04
    img = _up(dens, size)
    img -= anat["lung_dark"] * depth * (1.0 + texture)
    return img


def _add_vessels_and_bones(img: np.ndarray, rng: np.random.Generator, frame: _Frame, anat: dict[str, float],
                           depth: np.ndarray, inside: np.ndarray) -> None:
    """Vessels, ribs and clavicles, in place; drawn at half size (they are soft-edged anyway) and upsampled."""
    size = frame.size
    dframe = _Frame(max(min(size, 256), size // 2), frame.scale, frame.angle, frame.shift)
    img += 0.16 * _up(_draw_vessels(rng, dframe), size) * depth
    inside_f = _up(inside, size)
    ribs, clav = _draw_bones(rng, dframe, anat)
    img += anat["bone"] * inside_f * (_up(ribs, size) * (0.3 + 0.7 * depth) + 0.55 * _up(clav, size))


def _film_response(img: np.ndarray, anat: dict[str, float]) -> np.ndarray:
    """Soft knee x / (1 + (x/0.97)^8)^(1/8) (no clipped whites), then gamma and the background level."""
    img = np.maximum(img, 0.0)
    x8 = img * np.float32(1.0 / 0.97)
    x8 *= x8
    x8 *= x8
    x8 *= x8
    x8 += 1.0
    img /= np.sqrt(np.sqrt(np.sqrt(x8)))
    img = img ** anat["gamma"]
    return anat["bg"] + (1.0 - anat["bg"]) * img


def render_normal(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Noise-free anatomy (display 0..1), lung mask, side labels (1 image-left lung, 2
    image-right) and the anatomy parameters."""
    rng = np.random.default_rng([seed, 0])
    anat = _anatomy_params(rng)
    # the heart sits on the left dome
    anat["heart_cy"] = anat["dome_v"] + anat["dome_drop"] + 0.05 - anat["heart_ry"] * anat["heart_cy"]
    frame = _random_frame(rng, size)
    lo = max(32, size // 4)
    u, v = frame.grids(lo)
    px = 1.0 / (lo * frame.scale)  # one coarse pixel in model units
    inside, dens = _body(u, v, anat, px)
    lungs = _lung_fields(u, v, anat, 0.05 * lo * frame.scale)
    _add_soft_tissue(dens, rng, u, v, anat, inside, lungs)
    lung, sides, depth = _sharp_lungs(lungs, size)
    img = _lung_air(rng, dens, depth, anat, size)
    _add_vessels_and_bones(img, rng, frame, anat, depth, inside)
    return _film_response(img, anat).astype(np.float32), lung, sides, anat
