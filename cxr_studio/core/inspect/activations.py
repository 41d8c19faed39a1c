"""Recording layer outputs, the layer list, user regions and channel ranking.

Layers are addressed by readable name: a model built by ``cxr_studio.core.models`` carries
``model.layer_names`` (readable name -> module path, in forward order); any other ``nn.Module``
falls back to the dotted paths of its leaf modules (``named_modules()``). A module path is also
accepted wherever a readable name is.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from skimage.draw import polygon

from cxr_studio.core.models.layers import LayerError, layer_names, resolve_layer
from cxr_studio.core.inspect.method_names import RANKINGS
from cxr_studio.core.models.placement import sample_on_grid

RANK_METHODS = RANKINGS  # the one list (method_names)


# -- layer lookup --------------------------------------------------------------------------
def layer_table(model: nn.Module) -> dict[str, str]:
    """Readable name -> module path, in forward order (``model.layer_names`` or the leaf modules);
    the one lookup is ``models.layers``."""
    return layer_names(model, leaves_only=True)


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The module behind a readable name or a module path; `LayerError` when there is none."""
    return resolve_layer(model, name)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def as_batch(model: nn.Module, x: Any) -> torch.Tensor:
    """An input (C, H, W) / (N, C, H, W) tensor or array as a float batch on the model's device."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(f"model input must be (C, H, W) or (N, C, H, W), got shape {tuple(t.shape)}")
    return t.to(device=_model_device(model), dtype=torch.float32)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run with every submodule in eval mode and restore each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    return None


@contextlib.contextmanager
def record_activations(
    model: nn.Module, names: Sequence[str] | None = None, *, first_item: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks on the named layers (all layers when ``names`` is None); yields a dict that
    fills with ``output.detach().clone()`` (the first call of each layer) during the forward.

    ``first_item=True`` keeps only batch item 0. Hooks are removed on exit, also on exceptions.
    """
    table = layer_table(model)
    wanted = list(table) if names is None else list(names)
    modules = [(n, resolve_module(model, n)) for n in wanted]
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_m: nn.Module, _inp: Any, output: Any) -> None:
            t = _first_tensor(output)
            if t is None or name in store:
                return
            t = t.detach()
            store[name] = (t[0] if first_item and t.ndim > 0 else t).clone()

        return hook

    try:
        for n, m in modules:
            handles.append(m.register_forward_hook(make_hook(n)))
        yield store
    finally:
        for h in handles:
            h.remove()


# -- forward with activations ------------------------------------------------------------------
@dataclass
class ForwardResult:
    """One forward pass: per-layer outputs of batch item 0, and its prediction."""

    activations: dict[str, np.ndarray]  # (C, h, w) for conv-like layers, (F,) for fc
    probabilities: np.ndarray  # (K,) softmax of the logits (sigmoid for multi-label models), batch item 0
    logits: np.ndarray  # (K,)
    input_size: tuple[int, int]  # (H, W) of the input


def forward_with_activations(model: nn.Module, x: Any, names: Sequence[str] | None = None) -> ForwardResult:
    """Run ``model`` on ``x`` under ``torch.no_grad`` recording ``names`` (default: every layer).

    Runs in eval mode: a model in train mode is switched to eval for the pass and every module's
    mode is restored afterwards, so the caller's model is left as it was. Only batch item 0 is
    kept. Arrays are float32 numpy.
    """
    batch = as_batch(model, x)
    with torch.no_grad(), eval_mode(model), record_activations(model, names, first_item=True) as store:
        out = model(batch)
    logits = _first_tensor(out)
    if logits is None:
        raise ValueError("the model returned no tensor")
    logits = logits.detach().float()
    if logits.ndim == 1:
        logits = logits[None]
    logits = logits.reshape(logits.shape[0], -1)[0]
    # a multi-label model (sigmoid outputs) gives one independent probability per class
    probs = torch.sigmoid(logits) if getattr(model, "multi_label", False) else torch.softmax(logits, dim=0)
    acts = {n: store[n].float().cpu().numpy() for n in (names if names is not None else layer_table(model)) if n in store}
    return ForwardResult(
        activations=acts,
        probabilities=probs.cpu().numpy().astype(np.float32),
        logits=logits.cpu().numpy().astype(np.float32),
        input_size=(int(batch.shape[-2]), int(batch.shape[-1])),
    )


# -- layer list ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerInfo:
    """One entry of the layer browser."""

    name: str  # readable name
    type: str  # module class name, e.g. "Conv2d"
    shape: tuple[int, ...] | None  # output shape without the batch dim; None if not run


def _input_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def list_layers(model: nn.Module, input_size: int | tuple[int, int], channels: int | None = None) -> list[LayerInfo]:
    """Every layer with its type and output shape, from one dummy forward of zeros.

    ``channels`` defaults to the first convolution's input channels (else 3).
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    c = int(channels) if channels is not None else _input_channels(model)
    x = torch.zeros(1, c, int(h), int(w))
    table = layer_table(model)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for n in table:
        def hook(_m: nn.Module, _i: Any, out: Any, n: str = n) -> None:
            t = _first_tensor(out)
            if t is not None and n not in shapes:
                shapes[n] = tuple(int(s) for s in t.shape[1:])

        handles.append(resolve_module(model, n).register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):
            model(as_batch(model, x))
    except RuntimeError as e:
        raise ValueError(f"The model cannot run on a {c}x{h}x{w} input: {e}") from e
    finally:
        for hd in handles:
            hd.remove()
    return [LayerInfo(n, type(resolve_module(model, n)).__name__, shapes.get(n)) for n in table]


# -- regions and ranking -----------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A user region in original-image (x, y) pixel coordinates: a rectangle (two opposite
    corners) or a polygon (three or more vertices)."""

    kind: str
    points: tuple[tuple[float, float], ...]

    def __init__(self, kind: str, points: Any) -> None:
        pts = np.asarray(points, dtype=np.float64)
        if kind not in ("rect", "polygon"):
            raise ValueError(f"Region kind must be 'rect' or 'polygon', got {kind!r}")
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
            raise ValueError("Region points must be a list of finite (x, y) pairs")
        if kind == "rect" and len(pts) != 2:
            raise ValueError(f"A rectangle region needs exactly two corners, got {len(pts)} points")
        if kind == "polygon" and len(pts) < 3:
            raise ValueError(f"A polygon region needs at least three points, got {len(pts)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "points", tuple((float(a), float(b)) for a, b in pts))

    def to_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Bool mask of the region on an (H, W) grid (pixels whose centres fall inside)."""
        h, w = int(shape[0]), int(shape[1])
        pts = np.asarray(self.points)
        mask = np.zeros((h, w), dtype=bool)
        if self.kind == "rect":
            (xa, ya), (xb, yb) = pts
            c0, c1 = int(np.ceil(min(xa, xb))), int(np.floor(max(xa, xb)))
            r0, r1 = int(np.ceil(min(ya, yb))), int(np.floor(max(ya, yb)))
            mask[max(r0, 0) : max(min(r1 + 1, h), 0), max(c0, 0) : max(min(c1 + 1, w), 0)] = True
        else:
            rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(h, w))
            mask[rr, cc] = True
        return mask


def _masked_means(act: np.ndarray, weights: np.ndarray, what: str) -> np.ndarray:
    total = float(weights.sum())
    if total <= 0:
        raise ValueError(f"The {what} does not overlap the model's input crop, so no channel can be scored inside it")
    return (act * weights[None]).reshape(act.shape[0], -1).sum(axis=1) / total


def rank_channels(
    act: np.ndarray,
    method: str,
    geometry: Any = None,
    lung_mask: np.ndarray | None = None,
    region: Region | np.ndarray | None = None,
    placement: Any = None,
) -> list[tuple[int, float]]:
    """Channels of one layer's activation (C, h, w) ordered by score, strongest first.

    ``"max"``/``"mean"`` over the map; ``"lungs"``/``"region"``: mean inside the lung mask / the
    user region (original-image coordinates; a `Region` or a bool mask), mapped onto the
    activation grid with ``geometry.original_to_grid`` and used as per-cell weights.
    For an fc output (F,) each neuron is a channel and only "max"/"mean" apply.
    ``placement`` (`placement.layer_placement`) samples the mask at the cells' receptive-field
    centres instead of stretching it over the grid.
    """
    a = np.asarray(act, dtype=np.float32)
    if method not in RANK_METHODS:
        raise ValueError(f"Unknown ranking method {method!r}; choose one of {RANK_METHODS}")
    if a.ndim == 1:
        if method in ("lungs", "region"):
            raise ValueError(f"Ranking by {method!r} needs a spatial (C, h, w) layer; this one is fully connected")
        a = a[:, None, None]
    if a.ndim != 3:
        raise ValueError(f"activation must be (C, h, w) or (F,), got shape {a.shape}")
    flat = a.reshape(a.shape[0], -1)
    if method == "max":
        scores = flat.max(axis=1)
    elif method == "mean":
        scores = flat.mean(axis=1)
    else:
        if geometry is None:
            raise ValueError(f"Ranking by {method!r} needs the preprocessing geometry to map the mask onto the layer")
        if method == "lungs":
            if lung_mask is None:
                raise ValueError("Ranking by 'lungs' needs a lung mask, and none was given")
            mask, what = np.asarray(lung_mask), "lung mask"
        else:
            if region is None:
                raise ValueError("Ranking by 'region' needs a region drawn on the image, and none was given")
            mask = region.to_mask(geometry.original_size) if isinstance(region, Region) else np.asarray(region)
            what = "region"
        if mask.shape != tuple(geometry.original_size):
            raise ValueError(f"The {what} has shape {mask.shape} but the radiograph is {tuple(geometry.original_size)}")
        if not mask.any():
            raise ValueError(f"The {what} is empty")
        if placement is not None:
            n = int(geometry.input_size)
            on_input = geometry.original_to_grid(mask.astype(np.float32), (n, n))
            weights = sample_on_grid(on_input, placement, a.shape[1:])
        else:
            weights = geometry.original_to_grid(mask.astype(np.float32), a.shape[1:])
        scores = _masked_means(a, np.asarray(weights, dtype=np.float32), what)
    scores = np.nan_to_num(scores.astype(np.float64), nan=-np.inf)
    order = np.argsort(-scores, kind="stable")
    return [(int(i), float(scores[i])) for i in order]
