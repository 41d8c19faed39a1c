"""Lung segmentation: ``segment_lungs(pixels, method="auto", atlas=None) -> bool mask``.

One function per method lives in its own module (``lungs_heuristic``, ``lungs_atlas``,
``lungs_unet``); this module only dispatches and applies the "auto" policy.
"""
from __future__ import annotations

import numpy as np

from cxr_studio.core.lungs.postprocess import LungSegmentation
from cxr_studio.core.lungs.heuristic import segment_heuristic
from cxr_studio.core.lungs.atlas import segment_atlas

__all__ = ["METHODS", "LungSegmentation", "dice", "segment_lungs", "segment_lungs_detailed"]

METHODS = ("auto", "unet", "atlas", "heuristic")


def segment_lungs_detailed(
    pixels: np.ndarray, method: str = "auto", atlas: str | None = None
) -> LungSegmentation:
    """Segment and say which method ran, how confident it is and any warning for the user.
    Each method checks its input itself (``check_pixels``), so a full-size image is scanned once."""
    if method not in METHODS:
        raise ValueError(f"Unknown lung segmentation method {method!r}; choose one of {METHODS}")
    if method == "heuristic":
        return LungSegmentation(segment_heuristic(pixels), "heuristic")
    if method == "atlas":
        return LungSegmentation(segment_atlas(pixels, atlas), "atlas")
    if method == "unet":
        from cxr_studio.core.lungs.unet import segment_unet  # here: _auto treats the U-Net module as optional

        return segment_unet(pixels)
    return _auto(pixels, atlas)


def _auto(px: np.ndarray, atlas: str | None) -> LungSegmentation:
    """The best available method: the shipped learned segmenter when present and confident,
    else the atlas when one is configured, else the heuristic."""
    warnings: list[str] = []
    from cxr_studio.core.lungs.unet import UNET_CONFIDENCE_THRESHOLD, segment_unet, shipped_segmenter_available

    if shipped_segmenter_available():
        res = segment_unet(px)
        if res.confidence is None or res.confidence >= UNET_CONFIDENCE_THRESHOLD:
            return res
        warnings.append(
            f"The learned lung segmenter is unsure about this image (confidence {res.confidence:.2f});"
            " falling back to the " + ("atlas" if atlas else "heuristic") + " method."
        )
    if atlas:
        return LungSegmentation(segment_atlas(px, atlas), "atlas", warnings=warnings)
    return LungSegmentation(segment_heuristic(px), "heuristic", warnings=warnings)


def segment_lungs(pixels: np.ndarray, method: str = "auto", atlas: str | None = None) -> np.ndarray:
    """Bool lung mask of the input's shape. ``atlas`` is a folder in an NLM layout (Montgomery
    ``CXR_png`` + ``ManualMask``, or Shenzhen ``CXR_png`` + ``mask``) used by the atlas method."""
    return segment_lungs_detailed(pixels, method, atlas).mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two bool masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)
