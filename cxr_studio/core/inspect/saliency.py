"""Channel maps scaled to 0..1, Grad-CAM / Grad-CAM++, and mapping maps onto the radiograph.

`grad_cam` reproduces pytorch-grad-cam (the ``grad-cam`` package) numerically: the same weights
(Grad-CAM: mean gradient per channel; Grad-CAM++: its alpha formula), ReLU, min-max scaling with a
1e-7 guard, ``cv2.resize`` (bilinear) to the input size, and a second min-max scaling. It is faster
because the target layer's output is made a graph leaf: nothing before it is recorded for
autograd and only the gradient of the class score with respect to that output is computed.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from cxr_studio.core.inspect.activations import LayerError, _first_tensor, as_batch, eval_mode, resolve_module
from cxr_studio.core.inspect.method_names import SCALES



def channel_map(act: np.ndarray, channel: int, scale: str = "channel") -> np.ndarray:
    """One channel of a (C, h, w) activation as an (h, w) float32 map in 0..1.

    ``"channel"``: min-max of that channel (as the paper did; a constant channel gives zeros).
    ``"layer"``: ``(a - lo) / (hi - lo)`` with ``hi`` the layer's max and ``lo = min(0, layer min)``,
    so ReLU outputs are simply divided by the layer max and channels stay comparable.
    """
    a = np.asarray(act, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"activation must be (C, h, w), got shape {a.shape}")
    if scale not in SCALES:
        raise ValueError(f"Unknown scale {scale!r}; choose one of {SCALES}")
    c = int(channel)
    if not 0 <= c < a.shape[0]:
        raise ValueError(f"Channel {channel} does not exist; this layer has channels 0..{a.shape[0] - 1}")
    m = a[c]
    if scale == "channel":
        lo, hi = float(m.min()), float(m.max())
    else:
        lo, hi = min(0.0, float(a.min())), float(a.max())
    if not hi - lo > 1e-12:
        return np.zeros(m.shape, dtype=np.float32)
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def channel_maps(act: np.ndarray, scale: str = "channel") -> np.ndarray:
    """Every channel of a (C, h, w) activation scaled as `channel_map` does, (C, h, w) float32
    (vectorised: one pass over the layer instead of one per channel)."""
    a = np.asarray(act, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"activation must be (C, h, w), got shape {a.shape}")
    if scale not in SCALES:
        raise ValueError(f"Unknown scale {scale!r}; choose one of {SCALES}")
    if a.shape[0] == 0:
        return a.copy()
    if scale == "channel":
        lo = a.min(axis=(1, 2), keepdims=True)
        hi = a.max(axis=(1, 2), keepdims=True)
    else:
        lo = np.full((1, 1, 1), min(0.0, float(a.min())), np.float32)
        hi = np.full((1, 1, 1), float(a.max()), np.float32)
    span = hi - lo
    ok = span > 1e-12
    out = np.where(ok, (a - lo) / np.where(ok, span, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def to_original(m: np.ndarray, geometry: Any) -> np.ndarray:
    """A map covering the model input (any resolution) resampled onto the original radiograph."""
    return geometry.map_to_original(m)


def _scale_like_reference(cam: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch_grad_cam.utils.image.scale_cam_image for one map."""
    cam = cam - np.min(cam)
    cam = cam / (1e-7 + np.max(cam))
    if size is not None:
        cam = cv2.resize(np.float32(cam), size)  # (width, height), INTER_LINEAR
    return np.float32(cam)


def _cam_weights(a: torch.Tensor, g: torch.Tensor, plus: bool) -> torch.Tensor:
    """Per-channel weights (C,) from activation and gradient (C, h, w)."""
    if not plus:
        return g.mean(dim=(1, 2))
    g2 = g * g
    g3 = g2 * g
    sum_a = a.sum(dim=(1, 2), keepdim=True)
    aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    aij = torch.where(g != 0, aij, torch.zeros_like(aij))
    return (torch.clamp(g, min=0) * aij).sum(dim=(1, 2))


def grad_cam(
    model: nn.Module,
    x: Any,
    layer_name: str,
    class_index: int | None = None,
    plus: bool = False,
    grid: bool = False,
) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++ with ``plus=True``) of batch item 0 at ``layer_name`` (the layer's
    output), as an (H, W) float32 map in 0..1 at the input size, stretched over the input as
    pytorch-grad-cam does; ``grid=True`` returns it at the layer's own resolution instead (to be
    placed with `placement.place_on_input`). ``class_index`` None = the predicted class.

    The caller's model is left unchanged: eval mode only during the call (each module's mode is
    restored), hooks removed, ``requires_grad`` untouched, no ``.grad`` accumulated on parameters.
    Works whether or not the caller is inside ``torch.no_grad``.
    """
    module = resolve_module(model, layer_name)
    batch = as_batch(model, x)[:1].detach()
    captured: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _inp: Any, output: Any) -> Any:
        t = _first_tensor(output)
        if t is None or "a" in captured:
            return None
        leaf = t.detach().requires_grad_(True)
        captured["a"] = leaf
        torch.set_grad_enabled(True)  # record the graph from here on only
        out = leaf.clone()  # a non-leaf copy that later in-place ops (ReLU) may modify
        if isinstance(output, torch.Tensor):
            return out
        return type(output)(out if o is t else o for o in output)

    previous = torch.is_grad_enabled()
    handle = module.register_forward_hook(hook)
    try:
        torch.set_grad_enabled(False)
        with eval_mode(model):
            logits = _first_tensor(model(batch))
        torch.set_grad_enabled(True)
        if "a" not in captured or logits is None:
            raise LayerError(f"Layer {layer_name!r} was not run by the model's forward pass")
        a = captured["a"]
        if a.ndim != 4:
            raise LayerError(
                f"Grad-CAM needs a layer with spatial output (N, C, h, w); {layer_name!r} gives {tuple(a.shape)}"
            )
        scores = logits.reshape(logits.shape[0], -1)[0]
        k = int(torch.argmax(scores).item()) if class_index is None else int(class_index)
        if not 0 <= k < scores.shape[0]:
            raise ValueError(f"Class index {class_index} does not exist; the model has {scores.shape[0]} classes")
        if not scores.requires_grad:
            raise LayerError(f"The class score does not depend on layer {layer_name!r}")
        (grad,) = torch.autograd.grad(scores[k], a, allow_unused=True)
        if grad is None:
            raise LayerError(f"The class score does not depend on layer {layer_name!r}")
    finally:
        handle.remove()
        torch.set_grad_enabled(previous)
    with torch.no_grad():
        act, g = a[0].detach().float(), grad[0].float()
        w = _cam_weights(act, g, plus)
        cam = torch.clamp((w[:, None, None] * act).sum(dim=0), min=0).cpu().numpy()
    if grid:
        return _scale_like_reference(cam)
    h, wd = int(batch.shape[-2]), int(batch.shape[-1])
    cam = _scale_like_reference(cam, (wd, h))
    return _scale_like_reference(cam)
