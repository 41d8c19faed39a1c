"""Faithfulness of a saliency map: deletion and insertion curves (Petsiuk et al., RISE, 2018).

Deletion replaces the input's pixels by a blurred copy of the image, most salient first; insertion
starts from the blurred copy and puts the pixels back in the same order. The class probability is
read after each of ``steps`` equal shares; the AUC is the trapezoid area over the share 0..1.
A faithful map gives a low deletion AUC and a high insertion AUC, and beats a random order
(`random_order`). Everything happens on the model input (all colour channels of a pixel together).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from cxr_studio.core.inspect.activations import _first_tensor, as_batch, eval_mode

STEPS = 16


def blurred(x: torch.Tensor) -> torch.Tensor:
    """The input (1, C, N, N) blurred by a Gaussian of sigma N/22 (about 10 pixels at 227)."""
    a = x[0].detach().float().cpu().numpy()
    sigma = max(1.0, a.shape[-1] / 22.0)
    out = np.stack([cv2.GaussianBlur(c, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for c in a])
    return torch.from_numpy(out)[None].to(x.device, x.dtype)


def saliency_order(m: np.ndarray, seed: int = 0) -> np.ndarray:
    """Flat pixel indices from most to least salient (ties broken at random, seeded)."""
    a = np.asarray(m, np.float64).ravel()
    jitter = np.random.default_rng(seed).random(a.size) * 1e-9
    return np.argsort(-(a + jitter), kind="stable")


def random_order(n_pixels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_pixels)


def _auc(ys: np.ndarray) -> float:
    xs = np.linspace(0.0, 1.0, len(ys))
    return float(np.sum((ys[1:] + ys[:-1]) / 2.0 * np.diff(xs)))


def curves(model: nn.Module, x: Any, order: np.ndarray, class_index: int, steps: int = STEPS,
           base: torch.Tensor | None = None) -> dict[str, Any]:
    """Deletion and insertion probability curves (``steps`` + 1 points each) and their AUCs for
    pixels taken in ``order`` (flat indices into the N x N input)."""
    xb = as_batch(model, x)[:1].detach()
    n_h, n_w = xb.shape[-2:]
    b = blurred(xb) if base is None else base
    cuts = np.linspace(0, n_h * n_w, steps + 1).round().astype(int)
    rank = np.empty(n_h * n_w, np.int64)
    rank[np.asarray(order)] = np.arange(n_h * n_w)
    rank_t = torch.from_numpy(rank.reshape(n_h, n_w)).to(xb.device)
    masks = torch.stack([(rank_t < c) for c in cuts]).to(xb.dtype)[:, None]  # 1 = taken so far
    deleted = xb * (1 - masks) + b * masks
    inserted = b * (1 - masks) + xb * masks
    with torch.no_grad(), eval_mode(model):
        p = []
        for batch in (deleted, inserted):
            out = _first_tensor(model(batch)).float()
            p.append(torch.softmax(out.reshape(out.shape[0], -1), 1)[:, int(class_index)].cpu().numpy())
    return {"deletion": p[0].tolist(), "insertion": p[1].tolist(),
            "deletion_auc": _auc(p[0]), "insertion_auc": _auc(p[1])}
