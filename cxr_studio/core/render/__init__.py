"""Colormaps as (256, 4) uint8 lookup tables, threshold-to-alpha, overlay compositing, tiling.

One implementation drives the screen and the exporter, so exported PNGs match what is shown:

* a map in 0..1 is quantised to a LUT index with :func:`lut_index` (``round(map * 255)``);
* :func:`threshold_lut` gives entries whose ``index / 255 < threshold`` alpha 0 (the paper's
  "black made transparent"); opacity is a separate global factor;
* :func:`overlay` blends ``colour * a + gray * (1 - a)`` with ``a = lut_alpha / 255 * opacity``.

GUI recipe (pyqtgraph): show ``lut_index(map)`` (uint8) in an ``ImageItem`` with
``levels=INDEX_LEVELS`` and ``setLookupTable(threshold_lut(colormap_lut(name), t))``; a threshold or
colormap change then only swaps pyqtgraph's 256-entry colour table (no per-pixel work in Python).
A float map can be shown directly with ``levels=FLOAT_LEVELS``: pyqtgraph indexes a 256-entry LUT
with ``trunc((x - lo) * 256 / (hi - lo))``, and these levels make that ``round(x * 255)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

COLORMAPS: tuple[str, ...] = ("jet", "viridis", "inferno", "gray")
#: the paper's look, in the app and in `cxr-studio export` alike: map values below it (the weakest
#: activations) are transparent
DEFAULT_THRESHOLD = 0.3
#: the overlay's opacity until the user moves the slider, in the app and in `cxr-studio export`
DEFAULT_OPACITY = 0.5

#: levels for a uint8 index image from :func:`lut_index` (identity mapping onto the LUT)
INDEX_LEVELS: tuple[float, float] = (0.0, 255.0)
#: levels for a float 0..1 map shown in pyqtgraph so its LUT index equals ``round(x * 255)``
FLOAT_LEVELS: tuple[float, float] = (-0.5 / 255.0, 255.5 / 255.0)

# Anchor colours sampled from matplotlib's viridis / inferno tables (CC0) at
# indices round(linspace(0, 255, 65)); linear interpolation between them reproduces matplotlib's
# 256-entry tables to within 1/255 per channel. Embedded so matplotlib is not a runtime dependency.
_ANCHORS_HEX = {
    "viridis": (
        "44015446075a470d6047136548186a481d6f482374482878472d7b46327e453781443b84424086"
        "4045883e49893d4e8a3b528b39568c375b8d355f8d33638d31678e2f6b8e2e6f8e2c728e2a768e"
        "297a8e277e8e26828e25858e23898e228d8d21918c20938c1f978b1e9b8a1f9f881fa28721a685"
        "24aa8327ad812cb17e31b57b37b8783dbc7444bf704cc26c54c5685cc86365cb5e6ece5877d153"
        "81d34d8bd64695d840a0da39aadc32b5de2bc0df25cae11fd5e21adfe318eae51af4e61efde725"
    ),
    "inferno": (
        "00000402010a04031207051b0b072410092d150b371b0c41210c4a280b532f0a5b3609613d0965"
        "440a684a0c6b510e6c57106e5d126e64156e6a176e71196e771c6d7d1e6d84206b8a226a902568"
        "9727669d2964a32c61a92e5eb0315bb63458bc3754c03a51c63d4dcb4149d04545d54a41da4e3c"
        "df5337e35933e75e2eeb6429ee6a24f1711ff37819f67e14f8850ff98c0afa9407fb9b06fca309"
        "fcaa0ffcb216fbba1ffac228f9c932f7d13df5d949f4e156f2e865f1ef75f3f586f6fa96fcffa4"
    ),
}


class RenderError(ValueError):
    """Bad input to a rendering function (unknown colormap, wrong shape, value out of range)."""


def matlab_jet(m: int = 256) -> np.ndarray:
    """MATLAB's ``jet(m)`` as an (m, 3) float64 array in 0..1, transcribed from jet.m.

    Piecewise linear: dark blue -> blue -> cyan -> yellow -> red -> dark red. For m = 256 the first
    row is (0, 0, 0.515625) and the last (0.5, 0, 0), exactly as MATLAB returns them.
    """
    if m < 1:
        raise RenderError(f"jet needs at least one colour, got m={m}")
    n = int(np.ceil(m / 4))
    u = np.concatenate([np.arange(1, n + 1) / n, np.ones(n - 1), np.arange(n, 0, -1) / n])
    g = int(np.ceil(n / 2)) - (1 if m % 4 == 1 else 0) + np.arange(1, len(u) + 1)  # 1-based rows
    r = g + n
    b = g - n
    g = g[g <= m]
    r = r[r <= m]
    b = b[b >= 1]
    out = np.zeros((m, 3), dtype=np.float64)
    out[r - 1, 0] = u[: len(r)]
    out[g - 1, 1] = u[: len(g)]
    out[b - 1, 2] = u[len(u) - len(b):]
    return out


def _anchored(name: str) -> np.ndarray:
    hexes = _ANCHORS_HEX[name]
    anchors = np.array(
        [[int(hexes[i + k: i + k + 2], 16) for k in (0, 2, 4)] for i in range(0, len(hexes), 6)],
        dtype=np.float64,
    )
    xp = np.round(np.linspace(0, 255, len(anchors)))
    x = np.arange(256, dtype=np.float64)
    return np.stack([np.interp(x, xp, anchors[:, c]) for c in range(3)], axis=1) / 255.0


def _build(name: str) -> np.ndarray:
    if name == "jet":
        rgb = matlab_jet(256)
    elif name == "gray":
        rgb = np.repeat((np.arange(256) / 255.0)[:, None], 3, axis=1)
    else:
        rgb = _anchored(name)
    lut = np.empty((256, 4), dtype=np.uint8)
    lut[:, :3] = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    lut[:, 3] = 255
    lut.setflags(write=False)
    return lut


_LUTS: dict[str, np.ndarray] = {}


def colormap_lut(name: str) -> np.ndarray:
    """The (256, 4) uint8 RGBA table of a colormap in :data:`COLORMAPS` (alpha 255 everywhere).

    The returned array is shared and read-only; copy it to modify.
    """
    if name not in COLORMAPS:
        raise RenderError(f"Unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}.")
    if name not in _LUTS:
        _LUTS[name] = _build(name)
    return _LUTS[name]


def _check_unit(value: float, what: str) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise RenderError(f"{what} must be between 0 and 1, got {value!r}.")
    return v


def _check_lut(lut: np.ndarray) -> np.ndarray:
    lut = np.asarray(lut)
    if lut.shape != (256, 4) or lut.dtype != np.uint8:
        raise RenderError(f"A lookup table must be (256, 4) uint8, got {lut.shape} {lut.dtype}.")
    return lut


def threshold_lut(lut: np.ndarray, threshold: float) -> np.ndarray:
    """A copy of ``lut`` whose entries with ``index / 255 < threshold`` have alpha 0."""
    lut = _check_lut(lut)
    t = _check_unit(threshold, "threshold")
    out = lut.copy()
    out[np.arange(256) / 255.0 < t, 3] = 0
    return out


def lut_index(heat: np.ndarray) -> np.ndarray:
    """Quantise a 0..1 map to LUT indices: ``floor(clip(map, 0, 1) * 255 + 0.5)`` as uint8 (round
    half up, as pyqtgraph does with :data:`FLOAT_LEVELS`; NaN -> 0, +inf -> 255).

    Works in cache-sized chunks (a 20-megapixel map takes a fraction of a second).
    """
    a = np.asarray(heat, dtype=np.float32)
    out = np.empty(a.shape, dtype=np.uint8)
    flat_in = a.reshape(-1)
    flat_out = out.reshape(-1)
    step = 1 << 18
    buf = np.empty(min(step, max(flat_in.size, 1)), dtype=np.float32)
    for s in range(0, flat_in.size, step):
        n = min(step, flat_in.size - s)
        b = buf[:n]
        np.multiply(flat_in[s: s + n], np.float32(255.0), out=b)
        b += np.float32(0.5)
        np.fmax(b, np.float32(0.0), out=b)  # fmax also turns NaN into 0
        np.minimum(b, np.float32(255.5), out=b)
        flat_out[s: s + n] = b  # truncation == floor for values >= 0
    return out


def apply_lut(heat: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map a 0..1 array through a (256, 4) LUT -> RGBA uint8 of shape ``heat.shape + (4,)``."""
    return _check_lut(lut)[lut_index(heat)]


def to_uint8(gray: np.ndarray) -> np.ndarray:
    """A 0..1 grayscale image as uint8 (``round(x * 255)``, clipped)."""
    return lut_index(gray)


def overlay(
    gray: np.ndarray,
    heat: np.ndarray,
    colormap: str = "jet",
    threshold: float = 0.0,
    opacity: float = DEFAULT_OPACITY,
    box: Sequence[int] | None = None,
) -> np.ndarray:
    """Composite a 0..1 heat map over a 0..1 grayscale image -> (H, W, 3) uint8.

    Per pixel: ``out = round(colour * a + gray8 * (1 - a))`` with ``a = alpha / 255 * opacity``,
    ``alpha`` from ``threshold_lut(colormap_lut(colormap), threshold)``. With ``box`` =
    ``(y0, x0, y1, x1)`` the heat map covers only that box (the model's crop, as the GUI shows it);
    outside it the gray image is left untouched.
    """
    g = np.asarray(gray)
    h = np.asarray(heat)
    if g.ndim != 2 or h.shape != g.shape:
        raise RenderError(
            f"overlay needs a 2-D image and a heat map of the same shape, got {g.shape} and {h.shape}."
        )
    if box is not None:
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 < y1 <= g.shape[0] and 0 <= x0 < x1 <= g.shape[1]):
            raise RenderError(f"The box {tuple(box)} does not lie inside the image {g.shape}.")
        out = np.repeat(to_uint8(g)[..., None], 3, axis=2)
        out[y0:y1, x0:x1] = overlay(g[y0:y1, x0:x1], h[y0:y1, x0:x1], colormap, threshold, opacity)
        return out
    op = _check_unit(opacity, "opacity")
    lut = threshold_lut(colormap_lut(colormap), threshold)
    table = blend_table(lut, op)
    idx = lut_index(h)
    g8 = to_uint8(g)
    out = np.empty(g.shape + (3,), dtype=np.uint8)
    flat_i, flat_g, flat_o = idx.reshape(-1), g8.reshape(-1), out.reshape(-1, 3)
    step = 1 << 18
    key = np.empty(min(step, max(flat_i.size, 1)), dtype=np.uint16)
    for s in range(0, flat_i.size, step):
        n = min(step, flat_i.size - s)
        k = key[:n]
        np.left_shift(flat_i[s: s + n], 8, out=k, dtype=np.uint16)
        k |= flat_g[s: s + n]
        np.take(table, k, axis=0, out=flat_o[s: s + n])
    return out


def blend_table(lut: np.ndarray, opacity: float) -> np.ndarray:
    """(65536, 3) uint8: the composite for every (LUT index, gray level) pair, row ``index * 256 + gray``.

    ``round(colour * a + gray * (1 - a))`` with ``a = alpha / 255 * opacity`` computed in float32;
    compositing a whole image is then one table lookup per pixel.
    """
    lut = _check_lut(lut)
    op = _check_unit(opacity, "opacity")
    a_tab = (lut[:, 3].astype(np.float32) / np.float32(255.0)) * np.float32(op)
    c_tab = lut[:, :3].astype(np.float32) * a_tab[:, None]
    gray = np.arange(256, dtype=np.float32)
    base = gray[None, :] * (np.float32(1.0) - a_tab[:, None])  # (index, gray)
    t = c_tab[:, None, :] + base[:, :, None]  # (index, gray, rgb)
    np.rint(t, out=t)
    np.clip(t, 0, 255, out=t)
    return t.astype(np.uint8).reshape(65536, 3)


def tile_maps(
    maps: Sequence[np.ndarray], cols: int | None = None, gap: int = 1, fill: float = 0.0
) -> np.ndarray:
    """Arrange same-shaped 2-D maps in a grid (row-major), ``gap`` pixels of ``fill`` between them.

    ``cols`` defaults to ``ceil(sqrt(n))``. Returns a float32 mosaic.
    """
    if len(maps) == 0:
        raise RenderError("tile_maps needs at least one map.")
    arrs = [np.asarray(m, dtype=np.float32) for m in maps]
    shape = arrs[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrs):
        raise RenderError(f"tile_maps needs 2-D maps of one shape, got {sorted({a.shape for a in arrs})}.")
    if gap < 0:
        raise RenderError(f"gap must be >= 0, got {gap}.")
    n = len(arrs)
    cols = int(cols) if cols else int(np.ceil(np.sqrt(n)))
    if cols < 1:
        raise RenderError(f"cols must be >= 1, got {cols}.")
    rows = int(np.ceil(n / cols))
    h, w = shape
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), fill, dtype=np.float32)
    for i, a in enumerate(arrs):
        r, c = divmod(i, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[y: y + h, x: x + w] = a
    return out


#: the LUT entry kept for "no data" (outside the crop box and the cells' receptive-field centres):
#: transparent at any threshold. Pixels with data never use it (their index is at least 1).
NO_DATA_INDEX = 0


def lut_index_with_gaps(heat: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """`lut_index`, with :data:`NO_DATA_INDEX` where ``valid`` is False and at least 1 elsewhere
    (a value of 0 then shows as index 1, 1/255 above it: the same colour to the eye)."""
    idx = lut_index(heat)
    if valid is None:
        return idx
    v = np.asarray(valid, dtype=bool)
    if v.shape != idx.shape:
        raise RenderError(f"The data mask {v.shape} does not match the map {idx.shape}.")
    np.maximum(idx, 1, out=idx)
    idx[~v] = NO_DATA_INDEX
    return idx


def no_data_lut(lut: np.ndarray) -> np.ndarray:
    """A copy of a (thresholded) LUT whose :data:`NO_DATA_INDEX` entry is transparent."""
    out = _check_lut(lut).copy()
    out[NO_DATA_INDEX, 3] = 0
    return out
