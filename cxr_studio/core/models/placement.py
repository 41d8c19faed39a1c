"""Where a layer's grid cells sit on the model input (receptive-field centres).

A conv/pool chain without padding shrinks the map *and* moves it: cxrnet's relu5 grid (20x20 on a
227 input) has its cell centres at input pixels 37, 45, ..., 189, not spread over 0..226. Stretching
such a map over the whole input (what MATLAB's ``imresize`` did in the paper, and what
pytorch-grad-cam does) puts hot spots up to ~1.4x too far from the centre. `Placement` records
``stride`` and ``offset`` (cell ``i`` is centred on input pixel ``offset + stride * i``) so maps
are drawn where the cells look, and masks are sampled where the cells are.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch.nn as nn

_POOLS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Placement:
    stride: float
    offset: float

    def centres(self, n: int) -> np.ndarray:
        return self.offset + self.stride * np.arange(n, dtype=np.float64)


def _first(v) -> int:
    return int(v[0] if isinstance(v, tuple) else v)


def layer_placement(model: nn.Module, layer: str) -> Placement | None:
    """Placement of ``layer``'s output grid from the conv/pool chain before it (in the model's
    readable-layer order); None when it cannot be told (layer not in ``model.layer_names``, or the
    chain holds a layer that breaks it, e.g. an adaptive pool). A model described by a discovery
    pass (``models.discovery``) carries its placements in ``model.layer_placements``."""
    known = getattr(model, "layer_placements", None)
    if isinstance(known, dict):
        return known.get(layer)
    names = getattr(model, "layer_names", None)
    if not isinstance(names, dict) or layer not in names and layer not in names.values():
        return None
    stride, offset = 1.0, 0.0
    for name, path in names.items():
        mod = model.get_submodule(path)
        if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear)):
            return None
        if isinstance(mod, _POOLS):
            k, s, p = _first(mod.kernel_size), _first(mod.stride), _first(mod.padding)
            d = _first(getattr(mod, "dilation", 1) or 1)
            offset += ((k - 1) * d / 2.0 - p) * stride
            stride *= s
        if layer in (name, path):
            return Placement(stride, offset)
    return None


def place_on_input(grid_map: np.ndarray, placement: Placement | None, input_size: int) -> np.ndarray:
    """An (h, w) layer map drawn on the (N, N) model input at its cells' centres (bilinear between
    centres, each edge cell extended half a stride, 0 outside). Without a placement the map is
    stretched over the whole input (the paper's imresize)."""
    m = np.asarray(grid_map, dtype=np.float32)
    n = int(input_size)
    if placement is None:
        return cv2.resize(m, (n, n), interpolation=cv2.INTER_LINEAR)
    h, w = m.shape
    s, o = placement.stride, placement.offset
    mat = np.array([[s, 0.0, o], [0.0, s, o]], dtype=np.float64)  # grid (j, i) -> input (x, y)
    out = cv2.warpAffine(m, mat, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    xs = np.arange(n)
    keep_x = (xs >= o - s / 2) & (xs <= o + (w - 1) * s + s / 2)
    keep_y = (xs >= o - s / 2) & (xs <= o + (h - 1) * s + s / 2)
    out[~keep_y, :] = 0.0
    out[:, ~keep_x] = 0.0
    return out


def data_mask(grid_shape: tuple[int, int], placement: Placement | None, input_size: int) -> np.ndarray:
    """(N, N) bool: where a layer map drawn by `place_on_input` has a value (its cells'
    receptive-field-centre span, each edge cell extended half a stride); the rest of the input is
    "no data" (drawn transparent, left out of map comparisons). All of it without a placement."""
    ones = np.ones(tuple(int(v) for v in grid_shape), dtype=np.float32)
    return place_on_input(ones, placement, int(input_size)) > 0.5


def sample_on_grid(input_map: np.ndarray, placement: Placement | None, grid_shape: tuple[int, int]) -> np.ndarray:
    """Average of an (N, N) model-input map (e.g. a mask's coverage) over each cell's stride-sized
    footprint around its centre, as an (h, w) grid. Without a placement, area resampling."""
    a = np.asarray(input_map, dtype=np.float32)
    gh, gw = grid_shape
    if placement is None:
        return cv2.resize(a, (gw, gh), interpolation=cv2.INTER_AREA)
    k = max(1, int(round(placement.stride)))
    box = cv2.blur(a, (k, k), borderType=cv2.BORDER_CONSTANT)
    ys = np.clip(np.round(placement.centres(gh)).astype(int), 0, a.shape[0] - 1)
    xs = np.clip(np.round(placement.centres(gw)).astype(int), 0, a.shape[1] - 1)
    return box[np.ix_(ys, xs)]
