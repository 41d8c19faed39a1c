"""Checks of a phantom-trained model on fresh phantoms: accuracy, and whether its strongest
deepest-conv channel (ranked by max) and its Grad-CAM point at the lesion (pointing game: the
peak of the map, resampled onto the original phantom grid, lies inside the lesion mask dilated
by ``dilation_px``). Used by ``tests/training/test_demo_model.py`` and ``cxr-studio-train demo-check``."""
from __future__ import annotations

from typing import Any, Iterable

import cv2
import numpy as np
import torch

from ..core.phantoms.phantom import make_phantom
from ..core.pipeline import preprocess
from .metrics import classification_metrics
from ..core.models.placement import layer_placement
from ..core.inspect.activations import forward_with_activations, rank_channels
from ..core.models import deepest_conv
from ..core.inspect.saliency import channel_map, grad_cam

FRESH_SEED0 = 100_000  # the demo model is trained on seeds < 100000


def phantom_inputs(seeds: Iterable[int], spec: Any, size: int, abnormal: bool | None = None) -> tuple[
        torch.Tensor, np.ndarray, list[Any], list[Any]]:
    """(batch (N, C, n, n), labels, phantoms, preprocessed) for phantoms of the given seeds."""
    phs, pres = [], []
    for s in seeds:
        ph = make_phantom(int(s), size, abnormal=abnormal)
        phs.append(ph)
        pres.append(preprocess(ph.radiograph(), spec))
    x = torch.from_numpy(np.stack([p.model_input for p in pres]).astype(np.float32))
    return x, np.array([p.label for p in phs]), phs, pres


@torch.no_grad()
def predict_batches(model: torch.nn.Module, x: torch.Tensor, batch: int = 50) -> np.ndarray:
    """Probability of class 1 for each row of ``x`` (eval mode for the call, restored after)."""
    was = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        out = [torch.softmax(model(x[i : i + batch].to(dev)).float(), 1)[:, 1].cpu() for i in range(0, len(x), batch)]
    finally:
        model.train(was)
    return torch.cat(out).numpy()


def phantom_accuracy(model: torch.nn.Module, spec: Any, n: int = 200, size: int = 256,
                     seed0: int = FRESH_SEED0) -> dict[str, float]:
    """Accuracy (threshold 0.5) on ``n`` fresh phantoms (seeds seed0 .. seed0+n-1, label by seed)."""
    x, labels, _, _ = phantom_inputs(range(seed0, seed0 + n), spec, size)
    return classification_metrics(labels, predict_batches(model, x))


def peak_in_mask(map_original: np.ndarray, mask: np.ndarray, dilation_px: int) -> bool:
    """Pointing game: is the map's maximum inside ``mask`` grown by ``dilation_px`` pixels?"""
    m = mask.astype(np.uint8)
    if dilation_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation_px + 1, 2 * dilation_px + 1))
        m = cv2.dilate(m, k)
    y, x = np.unravel_index(int(np.argmax(map_original)), map_original.shape)
    return bool(m[y, x])


def receptive_field(model: torch.nn.Module, layer: str) -> tuple[float, float]:
    """(stride, offset) of ``layer``'s grid in input pixels: cell ``i`` is centred on input pixel
    ``stride * i + offset`` (see `cxr_studio.core.models.placement`)."""
    p = layer_placement(model, layer)
    if p is None:
        raise ValueError(f"layer {layer!r} has no receptive-field placement in this model")
    return p.stride, p.offset


def aligned_peak(map_input: np.ndarray, grid_hw: tuple[int, int], rf: tuple[float, float]) -> np.ndarray:
    """Input-pixel (x, y) of the receptive-field centre under the peak of a map that was stretched
    from the layer grid ``grid_hw`` over the whole input (what ``grad_cam``/``map_to_original`` do)."""
    n_h, n_w = map_input.shape
    y, x = np.unravel_index(int(np.argmax(map_input)), map_input.shape)
    gi = (y + 0.5) * grid_hw[0] / n_h - 0.5
    gj = (x + 0.5) * grid_hw[1] / n_w - 0.5
    stride, offset = rf
    return np.array([[stride * gj + offset, stride * gi + offset]])


def point_in_mask(xy: np.ndarray, mask: np.ndarray, dilation_px: int) -> bool:
    m = mask.astype(np.uint8)
    if dilation_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation_px + 1, 2 * dilation_px + 1))
        m = cv2.dilate(m, k)
    x, y = np.clip(np.round(xy[0]).astype(int), 0, [m.shape[1] - 1, m.shape[0] - 1])
    return bool(m[y, x])


def pointing_game_scores(model: torch.nn.Module, spec: Any, n: int = 30, size: int = 512,
                         seed0: int = FRESH_SEED0 + 50_000, dilation_px: int = 8) -> dict[str, Any]:
    """Hit rates on ``n`` fresh abnormal phantoms for the strongest deepest-conv channel and Grad-CAM."""
    layer = deepest_conv(model)
    _, _, phs, pres = phantom_inputs(range(seed0, seed0 + n), spec, size, abnormal=True)
    rf = receptive_field(model, layer)
    hits: dict[str, list[bool]] = {k: [] for k in ("channel", "gradcam", "channel_stretched", "gradcam_stretched")}
    channels = []
    for ph, pre in zip(phs, pres):
        x = pre.tensor(next(model.parameters()).device)
        act = forward_with_activations(model, x, [layer]).activations[layer]
        ch = rank_channels(act, "max")[0][0]
        channels.append(int(ch))
        n_in = pre.geometry.input_size
        cmap = channel_map(act, ch)
        cmap_in = cv2.resize(cmap, (n_in, n_in), interpolation=cv2.INTER_LINEAR)
        cam = grad_cam(model, x, layer, class_index=1)
        for key, m in (("channel", cmap_in), ("gradcam", cam)):
            xy = pre.geometry.input_to_original(aligned_peak(m, act.shape[1:], rf))
            hits[key].append(point_in_mask(xy, ph.lesion_mask, dilation_px))
        hits["channel_stretched"].append(peak_in_mask(pre.geometry.map_to_original(cmap), ph.lesion_mask, dilation_px))
        hits["gradcam_stretched"].append(peak_in_mask(pre.geometry.map_to_original(cam), ph.lesion_mask, dilation_px))
    out: dict[str, Any] = {"layer": layer, "n": n, "dilation_px": dilation_px, "receptive_field": rf,
                           "channels": channels}
    out.update({f"{k}_hit_rate": float(np.mean(v)) for k, v in hits.items()})
    return out
