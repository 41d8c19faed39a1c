"""The learned lung segmenter (`lung_unet`) behind ``segment_lungs(method="auto")``.

The shipped weights (``resources/models/lung-unet.pt``, our checkpoint format) are loaded once.
The radiograph goes through the segmenter's own PreprocessSpec (whole image -> 256x256 -> CLAHE),
the probability map is cleaned at 256x256 (two lung components, holes filled) and resampled to the
input's size. Confidence: the share of the predicted lung whose probability is decisive (p > 0.8
inside, p < 0.2 just outside), times an anatomical plausibility check (two fields of sensible size).
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from cxr_studio.core.lungs.postprocess import LungSegmentation, check_pixels
from cxr_studio.core.resources import LUNG_SEGMENTER, find_resource
from cxr_studio.core.imaging.stages import prepare
from cxr_studio.core.imaging.radiograph import Radiograph

UNET_CONFIDENCE_THRESHOLD = 0.6
_lock = threading.Lock()
_cache: dict[str, object] = {}


def shipped_segmenter_available() -> bool:
    return find_resource(LUNG_SEGMENTER) is not None


def load_segmenter(path: str | Path | None = None):
    """The segmenter checkpoint (a ``LoadedCheckpoint``), loaded once per path, on the CPU."""
    # heavy: torch only when the U-Net runs, so `auto` can ask shipped_segmenter_available() for free
    from cxr_studio.core.models.checkpoint import load_checkpoint
    from cxr_studio.core.models import unet as _unet  # noqa: F401  (registers lung_unet)

    p = Path(path) if path is not None else find_resource(LUNG_SEGMENTER)
    if p is None:
        raise ValueError("The learned lung segmenter is not installed (resources/models/lung-unet.pt is missing).")
    key = str(Path(p).resolve())
    with _lock:
        if key not in _cache:
            loaded = load_checkpoint(p, device="cpu")
            loaded.model.eval()
            _cache[key] = loaded
        return _cache[key]


def predict_probability(pixels: np.ndarray, loaded=None) -> np.ndarray:
    """Lung probability at the segmenter's input resolution (256x256 float32)."""
    import torch

    loaded = loaded or load_segmenter()
    s = 4 * int(loaded.spec.intermediate_size)
    if min(pixels.shape) > 2 * s:  # full-size radiographs: a cheap subsample first (4x the
        pixels = cv2.resize(pixels, (s, s), interpolation=cv2.INTER_NEAREST)  # size, area-filtered next)
    p = prepare(Radiograph(pixels), loaded.spec)  # the segmenter's input spec does not segment
    with torch.inference_mode():
        logits = loaded.model(p.tensor())
    return torch.sigmoid(logits)[0, 0].numpy().astype(np.float32)


def clean_mask(mask: np.ndarray, max_components: int = 2, min_fraction: float = 0.01) -> np.ndarray:
    """Keep the ``max_components`` largest components above ``min_fraction`` of the image, fill
    their holes."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1][:max_components]
    keep = [i + 1 for i in order if areas[i] >= min_fraction * mask.size]
    out = np.isin(labels, keep)
    return ndi.binary_fill_holes(out)


def confidence(prob: np.ndarray, mask: np.ndarray) -> float:
    """0..1: how decisive the probabilities are around the predicted lungs, times plausibility."""
    if not mask.any():
        return 0.0
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    decisive = np.concatenate([prob[mask] > 0.8, prob[ring] < 0.2])
    score = float(decisive.mean())
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA] / mask.size
    plausible = (n - 1 == 2) and bool(np.all((areas > 0.04) & (areas < 0.45)))
    return score if plausible else score * 0.5


def segment_unet(pixels: np.ndarray, loaded=None) -> LungSegmentation:
    """Segment with the learned U-Net; the result carries its confidence."""
    pixels = check_pixels(pixels)
    prob = predict_probability(pixels, loaded)
    mask_small = clean_mask(prob > 0.5)
    conf = confidence(prob, mask_small)
    # resample the cleaned probability (outside the kept components -> 0) to the input's size
    cleaned = np.where(mask_small, np.maximum(prob, 0.51), np.minimum(prob, 0.49))
    u8 = np.round(cleaned * 254.0).astype(np.uint8)  # 127 is the 0.5 level; 8 bits keep the upsampling cheap
    h, w = pixels.shape
    full = cv2.resize(u8, (w, h), interpolation=cv2.INTER_LINEAR) > 127
    return LungSegmentation(full, "unet", confidence=conf)
