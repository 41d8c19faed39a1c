"""What a radiograph file must be before it is decoded, shared by the raster reader (io.py), the
DICOM reader (dicom.py) and the folder scanner (folders.py): the suffixes read, the one error type,
the size limits checked from a header, and the gray conversion of colour pixels. Its own module so
that neither of those imports io.py (io loads dicom.py on first use: pydicom takes ~1 s to import).

`MAX_PIXELS` is the one setting of the limit: change it here (``formats.MAX_PIXELS``), not on io.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
SUPPORTED_SUFFIXES: tuple[str, ...] = RASTER_SUFFIXES + DICOM_SUFFIXES


def is_supported(path: str | os.PathLike) -> bool:
    """True when the file name ends with a suffix `read_image` handles (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


MAX_PIXELS: int = 10_000 * 10_000
"""Refuse images with more pixels than this (checked from the header, before decoding)."""
MIN_SIDE: int = 32
"""Refuse images narrower or shorter than this: later stages cannot segment or normalise them."""

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights (R, G, B), as Pillow and OpenCV use them."""


class ImageReadError(ValueError):
    """A file could not be read as a radiograph; the message says why in plain words."""


def check_dimensions(height: int, width: int, name: str) -> None:
    """Refuse sizes above `MAX_PIXELS` or below `MIN_SIDE` before any decoding."""
    if height <= 0 or width <= 0:
        raise ImageReadError(f"{name} declares an empty image ({width} x {height} pixels).")
    if height * width > MAX_PIXELS:
        raise ImageReadError(
            f"{name} declares {width} x {height} pixels ({height * width / 1e6:.0f} megapixels), "
            f"more than the limit of {MAX_PIXELS / 1e6:.0f} megapixels; it is refused to protect "
            "memory (possibly a decompression bomb or a damaged header).")
    if min(height, width) < MIN_SIDE:
        raise ImageReadError(
            f"{name} is only {width} x {height} pixels; a radiograph must be at least "
            f"{MIN_SIDE} x {MIN_SIDE} pixels to be segmented and normalised.")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma in the input's own units (float32), keeping 16-bit precision."""
    f = rgb.astype(np.float32)
    y = LUMA[0] * f[:, :, 0] + LUMA[1] * f[:, :, 1] + LUMA[2] * f[:, :, 2]
    if rgb.dtype == np.uint8:
        return np.clip(y / 255.0, 0.0, 1.0).astype(np.float32)
    if rgb.dtype == np.uint16:
        return np.clip(y / 65535.0, 0.0, 1.0).astype(np.float32)
    return y
