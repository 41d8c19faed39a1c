"""Input-level attributions, on the model input grid: occlusion and integrated gradients.

Both are Captum's definitions (`captum.attr.Occlusion`, `captum.attr.IntegratedGradients` with its
default Gauss-Legendre rule), written here batched so they run without Captum; the tests compare them
with Captum when it is installed (the optional ``captum`` extra). The class score is the model's
logit of ``class_index``; the baseline is 0 in the normalised input (mid-grey for the "center"
normalisation), Captum's default.

A map for display: occlusion keeps the score drops (negative = occluding helped, set to 0); integrated
gradients sums |attribution| over colour channels; both are then divided by their maximum (0..1).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from cxr_studio.core.inspect.activations import _first_tensor, as_batch, eval_mode
from cxr_studio.core.cancel import Cancelled

Progress = Callable[[int, int], None]
Partial = Callable[[np.ndarray], None]  # an (H, W) 0..1 estimate of the map so far


def _check_cancel(cancel: Any, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled")


def _score(model: nn.Module, batch: torch.Tensor, k: int) -> torch.Tensor:
    out = _first_tensor(model(batch))
    if out is None:
        raise ValueError("the model returned no tensor")
    out = out.reshape(out.shape[0], -1)
    if not 0 <= k < out.shape[1]:
        raise ValueError(f"Class index {k} does not exist; the model has {out.shape[1]} classes")
    return out[:, k]


def _to_unit(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    hi = float(m.max()) if m.size else 0.0
    return (m / hi).astype(np.float32) if hi > 0 else np.zeros_like(m)


def occlusion_attribution(model: nn.Module, x: Any, class_index: int, window: int, stride: int,
                          batch_size: int = 32, progress: Progress | None = None, cancel: Any = None,
                          partial: Partial | None = None) -> np.ndarray:
    """Captum's Occlusion of batch item 0 (all channels occluded together by a ``window`` square
    moved by ``stride``): per pixel, the mean drop of the class logit over the windows covering it.
    (C, H, W) float32, signed. ``cancel`` (an Event) raises `Cancelled` between batches; ``partial``
    receives the display map of the windows done so far after each batch (row by row, top down)."""
    batch = as_batch(model, x)[:1].detach()
    _, c, h, w = batch.shape
    ys = list(range(0, max(h - window, 0) + 1, stride))
    xs = list(range(0, max(w - window, 0) + 1, stride))
    boxes = [(y, x0) for y in ys for x0 in xs]
    total = np.zeros((h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    with torch.no_grad(), eval_mode(model):
        base = float(_score(model, batch, class_index)[0])
        for i in range(0, len(boxes), batch_size):
            _check_cancel(cancel, "Occlusion")
            chunk = boxes[i : i + batch_size]
            xb = batch.repeat(len(chunk), 1, 1, 1)
            for j, (y, x0) in enumerate(chunk):
                xb[j, :, y : y + window, x0 : x0 + window] = 0.0
            drops = base - _score(model, xb, class_index).float().cpu().numpy()
            for (y, x0), d in zip(chunk, drops):
                total[y : y + window, x0 : x0 + window] += d
                count[y : y + window, x0 : x0 + window] += 1
            if progress:
                progress(min(i + batch_size, len(boxes)), len(boxes))
            if partial is not None and i + batch_size < len(boxes):
                partial(_to_unit(np.clip(np.where(count > 0, total / np.maximum(count, 1), 0.0), 0.0, None)))
    per_pixel = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    return np.repeat(per_pixel[None], c, axis=0)


def occlusion_map(model: nn.Module, x: Any, class_index: int, window: int | None = None,
                  stride: int | None = None, batch_size: int = 32, progress: Progress | None = None,
                  cancel: Any = None, partial: Partial | None = None) -> np.ndarray:
    """(H, W) 0..1: where hiding the image lowers the class score. Default window: 1/7 of the input
    side (32 px at 224), stride half the window."""
    n = int(as_batch(model, x).shape[-1])
    window = int(window or max(4, round(n / 7)))
    stride = int(stride or max(1, window // 2))
    a = occlusion_attribution(model, x, class_index, window, stride, batch_size, progress, cancel, partial)[0]
    return _to_unit(np.clip(a, 0.0, None))


def integrated_gradients(model: nn.Module, x: Any, class_index: int, steps: int = 32, batch_size: int = 16,
                         progress: Progress | None = None, cancel: Any = None,
                         partial: Partial | None = None) -> np.ndarray:
    """Captum's IntegratedGradients (baseline 0, Gauss-Legendre, ``steps`` points) of batch item 0:
    (C, H, W) float32 attributions (x - 0) * sum_i w_i * grad(alpha_i * x). ``cancel`` raises
    `Cancelled` between batches of points; ``partial`` receives the display map of the points done so
    far (their weighted gradient mean: a coarser quadrature of the same integral)."""
    batch = as_batch(model, x)[:1].detach()
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    # batches take every n-th point, so each spans the whole path (0..1) and a partial sum is a
    # coarser estimate of the same integral
    n_batches = -(-int(steps) // int(batch_size))
    order = np.argsort(np.arange(int(steps)) % n_batches, kind="stable")
    alphas = ((nodes + 1.0) / 2.0)[order]
    weights = (weights / 2.0)[order]
    grads = torch.zeros_like(batch[0])
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with eval_mode(model), torch.enable_grad():
            for i in range(0, len(alphas), batch_size):
                _check_cancel(cancel, "Integrated gradients")
                a = torch.as_tensor(alphas[i : i + batch_size], dtype=batch.dtype, device=batch.device)
                wt = torch.as_tensor(weights[i : i + batch_size], dtype=batch.dtype, device=batch.device)
                xb = (a[:, None, None, None] * batch).requires_grad_(True)
                (g,) = torch.autograd.grad(_score(model, xb, class_index).sum(), xb)
                grads += (g * wt[:, None, None, None]).sum(0)
                if progress:
                    progress(min(i + batch_size, len(alphas)), len(alphas))
                if partial is not None and i + batch_size < len(alphas):
                    done = float(weights[: i + batch_size].sum())
                    partial(_ig_display((batch[0] * grads / done).detach().float().cpu().numpy()))
    finally:
        for p, (flag, grad) in zip(params, saved):
            p.requires_grad_(flag)
            p.grad = grad
    return (batch[0] * grads).detach().float().cpu().numpy()


def _ig_display(attribution: np.ndarray) -> np.ndarray:
    return _to_unit(np.abs(attribution).sum(0))


def integrated_gradients_map(model: nn.Module, x: Any, class_index: int, steps: int = 32, batch_size: int = 16,
                             progress: Progress | None = None, cancel: Any = None,
                             partial: Partial | None = None) -> np.ndarray:
    """(H, W) 0..1: |integrated gradients| summed over the colour channels."""
    return _ig_display(integrated_gradients(model, x, class_index, steps, batch_size, progress, cancel, partial))
