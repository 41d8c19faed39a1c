"""Per-image scoring for ``cxr-studio-train lung-check`` (see `lung_check`): preprocess one
radiograph with the checkpoint's spec, find its lung mask, place the strongest channel's and
Grad-CAM's peaks by receptive field and say whether they lie in the lungs, with the chance baselines.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from .data import DatasetError, Sample, read_mask, read_radiograph
from ..core.inspect.activations import forward_with_activations, rank_channels
from ..core.lungs import segment_lungs_detailed
from ..core.pipeline import preprocess
from ..core.inspect.saliency import channel_map, grad_cam
from .demo_check import aligned_peak, point_in_mask
from ..core.models import build_model

ABNORMAL = 1  # class index of "abnormal": Grad-CAM explains it, prob_abnormal reports it


def dataset_lungs(sample: Sample, shape: tuple[int, int]) -> np.ndarray | None:
    """The dataset's lung mask at the image's shape (nearest-neighbour resize as training did), or None."""
    mask = read_mask(sample.mask_paths)
    if mask is not None and mask.shape != tuple(shape):
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def grow(mask: np.ndarray, dilation_px: int) -> np.ndarray:
    """``mask`` dilated by a disc of radius ``dilation_px`` (as the pointing game grows masks)."""
    m = mask.astype(np.uint8)
    if dilation_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation_px + 1, 2 * dilation_px + 1))
        m = cv2.dilate(m, k)
    return m > 0


def cell_centres_original(pre: Any, grid_hw: tuple[int, int], rf: tuple[float, float]) -> np.ndarray:
    """(h*w, 2) original-image (x, y) of every cell's receptive-field centre."""
    stride, offset = rf
    ys, xs = np.meshgrid(offset + stride * np.arange(grid_hw[0]), offset + stride * np.arange(grid_hw[1]),
                         indexing="ij")
    return pre.geometry.input_to_original(np.stack([xs.ravel(), ys.ravel()], axis=1))


def check_image(model: Any, spec: Any, layer: str, rf: tuple[float, float], sample: Sample,
                use_masks: bool, dilation_px: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON row, what a figure needs) for one image."""
    try:
        rad = read_radiograph(sample.path)
        ds_mask = dataset_lungs(sample, rad.shape)
        pre = preprocess(rad, spec, lung_mask=ds_mask if use_masks else None)
    except DatasetError:
        raise
    except ValueError as exc:
        raise DatasetError(f"cannot read or preprocess {sample.path}: {exc}") from None
    if ds_mask is not None:
        lungs, source = ds_mask, "dataset"
    elif pre.lung_mask is not None and spec.segmentation == "auto":
        lungs, source = pre.lung_mask, f"segment_lungs:{pre.segmentation_method}"  # the same call, reused
    else:
        seg = segment_lungs_detailed(rad.pixels, method="auto")
        lungs, source = seg.mask, f"segment_lungs:{seg.method}"
    target = grow(lungs, dilation_px)
    y0, x0, y1, x1 = pre.geometry.crop_box

    x = pre.tensor(next(model.parameters()).device)
    fwd = forward_with_activations(model, x, [layer])
    act = fwd.activations[layer]
    if act.ndim != 3:
        raise DatasetError(f"layer {layer!r} is not spatial (output {act.shape}); pick a conv or ReLU layer")
    ch, score = rank_channels(act, "max")[0]
    n_in = pre.geometry.input_size
    cmap_in = cv2.resize(channel_map(act, ch), (n_in, n_in), interpolation=cv2.INTER_LINEAR)
    cam = grad_cam(model, x, layer, class_index=ABNORMAL)
    peak = pre.geometry.input_to_original(aligned_peak(cmap_in, act.shape[1:], rf))
    cam_peak = pre.geometry.input_to_original(aligned_peak(cam, act.shape[1:], rf))
    cells = cell_centres_original(pre, act.shape[1:], rf)
    row = {
        "id": sample.id, "path": str(sample.path), "prob_abnormal": float(fwd.probabilities[ABNORMAL]),
        "channel": int(ch), "channel_score": float(score),
        "peak_xy": [float(v) for v in peak[0]], "hit": point_in_mask(peak, target, 0),
        "cam_peak_xy": [float(v) for v in cam_peak[0]], "cam_hit": point_in_mask(cam_peak, target, 0),
        "mask_source": source, "lung_fraction": float(target[y0:y1, x0:x1].mean()),
        "lung_fraction_cells": float(np.mean([point_in_mask(c[None], target, 0) for c in cells])),
    }
    return row, {"pre": pre, "forward": fwd, "lungs": lungs, "peak": peak}


def untrained_twin(ck: Any, seed: int) -> Any:
    """The checkpoint's architecture freshly initialised after ``torch.manual_seed(seed)`` (``fit``
    seeds torch with the recipe seed before it builds the model, so this is the trained net's
    epoch-0 state; ImageNet weights are not loaded), in eval mode on the checkpoint's device."""
    kw = dict(ck.arch_kwargs or {})
    if "weights" in kw:
        kw["weights"] = "none"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_model(ck.arch, **kw)
    return model.to(next(ck.model.parameters()).device).eval()
