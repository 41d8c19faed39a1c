"""Data-free lung segmentation: ``segment_heuristic(pixels) -> bool mask``.

No training images are used. The method:

1. crop the content box (drop black/white frames), resample to a 256 px square, stretch contrast;
2. find the background around the patient (black air, grey detector background, dark untextured
   regions joined to the border; each step backs off when it would reach into the chest) and
   stretch the body's width onto the grid (normalised body coordinates);
3. fit a procedurally drawn two-lung template (a mean shape written in code from textbook
   anatomy, not learnt from any data set) by a coarse-to-fine search over scale and position
   that maximises the contrast between the template's inside and a band around it (lungs are
   dark fields framed by brighter chest wall, mediastinum and diaphragm);
4. per lung, score pixels near the fitted template by darkness (against an Otsu threshold of that
   neighbourhood) plus the template's blurred prior log-odds, never far above its upper outline;
   keep the component overlapping the template most, close and fill it; if it leaks (touches the
   image's side or bottom, or lies largely outside the template) cut it back to the template;
5. keep the two fields, fill holes, smooth, and map back to the input's size.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

from cxr_studio.core.lungs.postprocess import (
    WORK_SIZE,
    check_pixels,
    clean_mask,
    content_box,
    disk,
    fill_holes,
    mask_to_input,
    to_work,
)

# Outline of the image-left lung (the patient's right) in normalised (u, v) coordinates of the
# body box: apex, lateral chest wall, costophrenic angle, diaphragm dome, mediastinal border.
_RIGHT_LUNG = np.array(
    [
        (0.34, 0.08), (0.26, 0.12), (0.19, 0.22), (0.15, 0.36), (0.13, 0.50), (0.12, 0.64),
        (0.13, 0.76), (0.18, 0.76), (0.27, 0.70), (0.36, 0.67), (0.44, 0.66), (0.45, 0.52),
        (0.44, 0.36), (0.43, 0.22), (0.41, 0.12),
    ],
    dtype=np.float64,
)
# The image-right lung (the patient's left) mirrors it, with the heart pushing the lower medial
# border outwards and the base a little lower.
_LEFT_LUNG = np.array(
    [
        (0.66, 0.08), (0.74, 0.12), (0.81, 0.22), (0.85, 0.36), (0.87, 0.50), (0.88, 0.64),
        (0.87, 0.78), (0.82, 0.78), (0.74, 0.73), (0.66, 0.70), (0.61, 0.64), (0.58, 0.52),
        (0.56, 0.36), (0.57, 0.22), (0.59, 0.12),
    ],
    dtype=np.float64,
)

_FIT = 64  # grid for the template search
# pixel score = DARK_WEIGHT * (threshold - value) / spread + PRIOR_WEIGHT * prior log-odds + BIAS
DARK_WEIGHT = 4.0
PRIOR_WEIGHT = 0.15
BIAS = 1.0
PRIOR_BLUR = 0.035  # template edge blur, fraction of the grid
MIN_FIELD = 0.2  # a field smaller than this fraction of its template is replaced by the template
MAX_OUTSIDE = 0.25  # fraction of a field allowed beyond its template before it counts as a leak
APEX_MARGIN = 0.025  # how far above the fitted template's outline a lung may reach (grid fraction)


def lung_template(size: int, sx: float = 1.0, sy: float = 1.0, dx: float = 0.0, dy: float = 0.0,
                  side: str = "both") -> np.ndarray:
    """Rasterise the built-in lung template (uint8 0/1, ``size`` square) after scaling about the
    centre of the body box by ``sx``, ``sy`` and shifting by ``dx``, ``dy`` (fractions of the box)."""
    out = np.zeros((size, size), np.uint8)
    polys = {"right": [_RIGHT_LUNG], "left": [_LEFT_LUNG], "both": [_RIGHT_LUNG, _LEFT_LUNG]}[side]
    for p in polys:
        q = np.empty_like(p)
        q[:, 0] = 0.5 + (p[:, 0] - 0.5) * sx + dx
        q[:, 1] = 0.45 + (p[:, 1] - 0.45) * sy + dy
        cv2.fillPoly(out, [np.round(q * size * 8).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=3)
    return out


def _contrast(g: np.ndarray, t: np.ndarray, band: np.ndarray) -> float:
    """Mean brightness of the band around the template minus mean brightness inside it."""
    n_in, n_b = t.sum(), band.sum()
    if n_in < 10 or n_b < 10:
        return -np.inf
    return float((g * band).sum() / n_b - (g * t).sum() / n_in)


def fit_template(g: np.ndarray) -> tuple[float, float, float, float]:
    """Coarse-to-fine search for the template scale/shift that best frames dark lung fields."""
    small = cv2.resize(g, (_FIT, _FIT), interpolation=cv2.INTER_AREA)
    k = disk(4)

    def score(p: tuple[float, float, float, float]) -> float:
        t = lung_template(_FIT, *p)
        band = cv2.dilate(t, k) - t
        return _contrast(small, t.astype(np.float32), band.astype(np.float32))

    neutral = (1.0, 1.0, 0.0, 0.0)
    best = (score(neutral), neutral)  # kept unless something frames the lungs better

    # coarse grid: horizontal/vertical scale about the body centre, horizontal/vertical shift
    for sx in np.linspace(0.75, 1.2, 4):
        for sy in np.linspace(0.7, 1.3, 5):
            for dx in np.linspace(-0.08, 0.08, 3):
                for dy in np.linspace(-0.12, 0.12, 5):
                    s = score((sx, sy, dx, dy))
                    if s > best[0]:
                        best = (s, (sx, sy, dx, dy))
    # local refinement
    p = list(best[1])
    steps = [0.05, 0.05, 0.02, 0.03]
    for _ in range(2):
        for i in range(4):
            for d in (-1, 1):
                q = list(p)
                q[i] += d * steps[i]
                s = score(tuple(q))
                if s > best[0]:
                    best = (s, tuple(q))
                    p = q
        steps = [s / 2 for s in steps]
    return tuple(best[1])  # type: ignore[return-value]


def _otsu(values: np.ndarray) -> float:
    v = np.clip(values * 255, 0, 255).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255.0


def _segment_side(g: np.ndarray, tmpl: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Dark pixels near one fitted template lung (inside ``allowed``), chosen by a
    prior-weighted threshold."""
    n = g.shape[0]
    prior = cv2.GaussianBlur(tmpl.astype(np.float32), (0, 0), n * PRIOR_BLUR)
    region = cv2.dilate(tmpl, disk(max(2, n // 16))) > 0
    rows = np.flatnonzero(tmpl.any(axis=1))
    if rows.size == 0:
        return np.zeros(g.shape, bool)
    # nothing far above the template's upper outline (neck, shoulders), column by column
    top = np.where(tmpl.any(axis=0), tmpl.argmax(axis=0), n).astype(np.float32)
    top = ndi.minimum_filter1d(top, size=2 * (n // 16) + 1)
    region &= np.arange(n)[:, None] >= (top - APEX_MARGIN * n)[None, :]
    region &= allowed
    if region.sum() < 20:
        return np.zeros(g.shape, bool)
    t = _otsu(g[region])
    spread = float(np.std(g[region]))
    if spread < 0.01:  # no contrast to go by
        return np.zeros(g.shape, bool)
    pc = np.clip(prior, 1e-3, 1 - 1e-3)
    score = (t - g) / spread * DARK_WEIGHT + np.log(pc / (1 - pc)) * PRIOR_WEIGHT + BIAS
    m = (score > 0) & region
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, disk(2)) > 0
    m = _best_component(m, tmpl)
    if not m.any():
        return m
    m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, disk(max(2, n // 40))) > 0
    m = fill_holes(m)
    if not _plausible(m, tmpl):
        # a leak (into the arms, the background or the neck): trust the fitted shape more
        m = _best_component(m & (cv2.dilate(tmpl, disk(max(2, n // 40))) > 0), tmpl)
        m = fill_holes(m)
    return m


def _best_component(m: np.ndarray, tmpl: np.ndarray) -> np.ndarray:
    """The connected component of ``m`` that overlaps the template most."""
    lab, k = ndi.label(m)
    if k == 0:
        return np.zeros(m.shape, bool)
    overlap = ndi.sum(tmpl > 0, lab, index=np.arange(1, k + 1))
    return lab == (int(np.argmax(overlap)) + 1)


def _plausible(m: np.ndarray, tmpl: np.ndarray) -> bool:
    """A lung field stays off the image's sides and bottom and mostly near its template."""
    n = m.shape[0]
    b = max(2, n // 40)
    if m[-b:].any() or m[:, :b].any() or m[:, -b:].any():
        return False
    near = cv2.dilate(tmpl, disk(max(2, n // 32))) > 0
    return float((m & ~near).sum()) <= MAX_OUTSIDE * float(m.sum())


def _border_connected(dark: np.ndarray) -> np.ndarray:
    """Components of ``dark`` that reach a band along the image's edges."""
    lab, k = ndi.label(dark)
    if k == 0:
        return np.zeros(dark.shape, bool)
    b = max(2, dark.shape[0] // 40)  # a band, not a line: thin bright frames must not shield the air
    edge = np.concatenate([lab[:b].ravel(), lab[-b:].ravel(), lab[:, :b].ravel(), lab[:, -b:].ravel()])
    border = np.unique(edge)
    return np.isin(lab, border[border > 0])


def _reaches_chest(air: np.ndarray, limit: float) -> bool:
    """True when a background candidate covers more than ``limit`` of the middle of the chest
    (dark lungs joined to the background cover 15-30 %; padding beside a thin patient < 5 %)."""
    n_r, n_c = air.shape
    return float(air[int(0.2 * n_r) : int(0.6 * n_r), int(0.15 * n_c) : int(0.85 * n_c)].mean()) > limit


def outside_air(g: np.ndarray) -> np.ndarray:
    """The background around the patient: dark pixels connected to the image border.

    First the very dark air (below a fraction of an Otsu threshold, lowered until it stays out
    of the chest: dark lungs can touch black padding); then, with a threshold fitted on what is
    left, the grey background some systems show (beside raised arms, children), and last dark
    untextured regions; each step is dropped when it would reach into the chest.
    """
    gs = cv2.GaussianBlur(g, (0, 0), 2.0)
    t = _otsu(gs)
    air = np.zeros(g.shape, bool)
    for f in (0.5, 0.3, 0.15):
        cand = _border_connected(cv2.morphologyEx((gs < f * t).astype(np.uint8), cv2.MORPH_OPEN, disk(1)) > 0)
        if not _reaches_chest(cand, 0.08):
            air = cand
            break
    rest = ~air
    if rest.sum() < 100:
        return air
    dark = (gs < 0.75 * _otsu(gs[rest])).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, disk(3)) > 0
    air2 = _border_connected(dark | air)
    if not _reaches_chest(air2, 0.01):
        air = air2
    # finally smooth (untextured) darkish background, e.g. between raised arms and the chest
    hp = g - cv2.GaussianBlur(g, (0, 0), 2.0)
    tex = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 6.0))
    rest = ~air
    if rest.sum() < 100:
        return air
    cand = (gs < _otsu(gs[rest])) & (tex < 0.8 * float(np.median(tex)))
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, disk(3)) > 0
    air3 = _border_connected(cand | air)
    return air if _reaches_chest(air3, 0.01) else air3


def body_columns(air: np.ndarray) -> tuple[int, int]:
    """Left and right edges of the body (median over the chest's middle rows)."""
    n_rows, n_cols = air.shape
    rows = ~air[int(0.25 * n_rows) : int(0.65 * n_rows)]
    lefts, rights = [], []
    for r in rows:
        idx = np.flatnonzero(r)
        if idx.size:
            lefts.append(idx[0])
            rights.append(idx[-1] + 1)
    if not lefts:
        return 0, n_cols
    x0, x1 = int(np.median(lefts)), int(np.median(rights))
    if x1 - x0 < 0.4 * n_cols:
        return 0, n_cols
    return x0, x1


def segment_heuristic_work(g: np.ndarray) -> np.ndarray:
    """Segment a working-grid image (square, 0..1); returns a bool mask of the same grid."""
    n = g.shape[0]
    air = outside_air(g)
    x0, x1 = body_columns(air)
    # normalise to body coordinates: stretch the body's width onto the whole grid
    gb = cv2.resize(g[:, x0:x1], (n, n), interpolation=cv2.INTER_LINEAR)
    airb = cv2.resize(air[:, x0:x1].astype(np.uint8), (n, n), interpolation=cv2.INTER_NEAREST) > 0
    airb = cv2.dilate(airb.astype(np.uint8), disk(2)) > 0
    fill = float(np.percentile(gb[~airb], 75)) if (~airb).any() else 1.0
    gb = np.where(airb, fill, gb).astype(np.float32)  # outside air must never look like lung
    gb = cv2.GaussianBlur(gb, (0, 0), 1.0)
    p = fit_template(gb)
    allowed = ~airb
    mb = np.zeros(gb.shape, bool)
    for side in ("right", "left"):
        tmpl = lung_template(n, *p, side=side)
        field = _segment_side(gb, tmpl, allowed)
        if field.sum() < MIN_FIELD * tmpl.sum():
            field = tmpl > 0  # nothing lung-like found (flat or odd image): the fitted shape itself
        mb |= field
    mb = clean_mask(mb, 2, sigma=2.0, min_fraction=0.005)
    out = np.zeros(g.shape, bool)
    out[:, x0:x1] = cv2.resize(mb.astype(np.float32), (x1 - x0, n), interpolation=cv2.INTER_LINEAR) >= 0.5
    return out


def segment_heuristic(pixels: np.ndarray) -> np.ndarray:
    """Bool lung mask of ``pixels``'s shape (float32 HxW 0..1), computed without any data."""
    px = check_pixels(pixels)
    box = content_box(px)
    g = to_work(px, box, WORK_SIZE)
    return mask_to_input(segment_heuristic_work(g), box, px.shape)
