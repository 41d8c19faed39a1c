"""Shared helpers for the lung segmenters: working resolution, content box, mask clean-up.

Every method works on a small square grid (``WORK_SIZE``) cut from the image's content box (the
part that is not a constant black/white frame), then maps its mask back onto the input's pixels
with :func:`mask_to_input`. :func:`clean_mask` keeps the two largest plausible lung fields, fills
their holes and smooths the outline; a learned segmenter can reuse it on its probability output.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage as ndi

WORK_SIZE = 256  # side of the internal working grid, in pixels
MIN_SIDE = 16  # smallest image side any method accepts


@dataclass
class LungSegmentation:
    """What a segmenter returns: the mask, the method that made it, its confidence, warnings."""

    mask: np.ndarray  # bool, input's shape
    method: str  # the method that produced the mask (never "auto")
    confidence: float | None = None  # 0..1 where the method can tell
    warnings: list[str] = field(default_factory=list)


class LungSegmentationError(ValueError):
    """An input the lung segmenters cannot work with; the message says why."""


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    """Return ``pixels`` as a finite float32 (H, W) array or raise a clear error."""
    a = np.asarray(pixels)
    if a.ndim != 2:
        raise LungSegmentationError(
            f"Lung segmentation needs a 2-D grayscale image, got an array of shape {a.shape}."
        )
    if min(a.shape) < MIN_SIDE:
        raise LungSegmentationError(
            f"The image is too small to segment ({a.shape[1]}x{a.shape[0]} pixels;"
            f" at least {MIN_SIDE}x{MIN_SIDE} is needed)."
        )
    if not np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
        a = a.astype(np.float32)
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise LungSegmentationError("The image contains NaN or infinite values; cannot segment it.")
    return a


@dataclass(frozen=True)
class ContentBox:
    """Rows ``y0:y1`` and columns ``x0:x1`` of the input that hold the radiograph proper."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def content_box(pixels: np.ndarray) -> ContentBox:
    """Find the part of the image inside a constant frame (black padding, white borders).

    Pixels that differ from the image's extreme values form the content; the bounding box of
    their largest connected blob (after an opening that removes thin burned-in text) is the box.
    """
    h, w = pixels.shape
    step = max(1, int(np.ceil(max(h, w) / 256)))
    a = pixels[::step, ::step]
    lo, hi = float(a.min()), float(a.max())
    tol = 0.02 * max(hi - lo, 1e-6)
    content = ((a > lo + tol) & (a < hi - tol)).astype(np.uint8)
    content = cv2.morphologyEx(content, cv2.MORPH_OPEN, disk(2))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=8)
    full = ContentBox(0, h, 0, w)
    if n <= 1:
        return full
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[i, :4])
    box = ContentBox(y * step, min(h, (y + bh) * step), x * step, min(w, (x + bw) * step))
    if box.shape[0] < max(MIN_SIDE, h // 4) or box.shape[1] < max(MIN_SIDE, w // 4):
        return full
    return box


def to_work(pixels: np.ndarray, box: ContentBox, size: int = WORK_SIZE) -> np.ndarray:
    """Crop ``box`` and resample to ``size`` x ``size`` float32, stretched to 0..1 by percentiles."""
    crop = pixels[box.y0 : box.y1, box.x0 : box.x1]
    interp = cv2.INTER_AREA if min(crop.shape) > size else cv2.INTER_LINEAR
    g = cv2.resize(crop, (size, size), interpolation=interp).astype(np.float32)
    lo, hi = np.percentile(g, [1.0, 99.0])
    if hi - lo < 1e-6:
        return np.zeros_like(g)
    return np.clip((g - lo) / (hi - lo), 0.0, 1.0)


def mask_to_input(work_mask: np.ndarray, box: ContentBox, shape: tuple[int, int]) -> np.ndarray:
    """Map a working-grid mask (bool or probability) back to a bool mask of the input's ``shape``."""
    out = np.zeros(shape, dtype=bool)
    bh, bw = box.shape
    m = cv2.resize(work_mask.astype(np.float32), (bw, bh), interpolation=cv2.INTER_LINEAR)
    out[box.y0 : box.y1, box.x0 : box.x1] = m >= 0.5
    return out


def disk(radius: int) -> np.ndarray:
    """A filled disc structuring element."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in a bool mask."""
    return ndi.binary_fill_holes(mask)


def smooth_mask(mask: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Smooth a bool mask's outline by blurring and re-thresholding at one half."""
    if sigma <= 0:
        return mask.astype(bool)
    f = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return f >= 0.5


def largest_components(mask: np.ndarray, n: int = 2, min_fraction: float = 0.01) -> np.ndarray:
    """Keep the ``n`` largest connected components, each at least ``min_fraction`` of the image."""
    lab, k = ndi.label(mask)
    if k == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(sizes)[::-1][:n]
    keep = [i + 1 for i in order if sizes[i] >= min_fraction * mask.size]
    return np.isin(lab, keep)


def clean_mask(mask: np.ndarray, n: int = 2, sigma: float = 2.0, min_fraction: float = 0.01) -> np.ndarray:
    """Standard lung-mask clean-up on the working grid: keep the ``n`` largest plausible
    components, fill holes in each, smooth the outline, and drop slivers the smoothing created."""
    m = largest_components(mask.astype(bool), n, min_fraction)
    m = fill_holes(m)
    m = smooth_mask(m, sigma)
    m = largest_components(m, n, min_fraction / 2)
    return fill_holes(m)
