"""The one PNG writer: gray 8/16-bit, RGB and RGBA, encoded deterministically, written atomically.

``encode_png(array, bits=8)`` -> bytes; ``write_png(path, array, bits=8)`` writes them through a temp
file and ``os.replace``. Accepted arrays:
- (H, W) gray: float in 0..1 (or bool), uint8 or uint16; ``bits`` 8 or 16 chooses the file's depth;
- (H, W, 3) RGB or (H, W, 4) RGBA, uint8 (``bits`` must be 8). Channel order is RGB(A), not OpenCV's BGR.
The compression level is fixed, so the same pixels always give the same bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cxr_studio.core.atomic import write_bytes_atomic

PNG_COMPRESSION = 6


class ImageWriteError(ValueError):
    """An array could not be written as an image; the message says why."""


def _gray(a: np.ndarray, bits: int) -> np.ndarray:
    top = 255 if bits == 8 else 65535
    if a.dtype == np.uint8:
        return a if bits == 8 else a.astype(np.uint16) * np.uint16(257)
    if a.dtype == np.uint16:
        return a if bits == 16 else ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating) or a.dtype == np.bool_:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise ImageWriteError("write_png was given NaN or infinite values.")
        if f.min() < 0.0 or f.max() > 1.0:
            raise ImageWriteError(f"write_png expects floats in 0..1, got {f.min():.4g}..{f.max():.4g}.")
        return np.rint(f * top).astype(np.uint8 if bits == 8 else np.uint16)
    raise ImageWriteError(f"write_png accepts float 0..1, uint8 or uint16, not {a.dtype}.")


def encode_png(array: np.ndarray, bits: int = 8) -> bytes:
    """PNG bytes of a gray, RGB or RGBA array (see the module's docstring); ImageWriteError otherwise."""
    if bits not in (8, 16):
        raise ImageWriteError(f"bits must be 8 or 16, not {bits!r}.")
    a = np.asarray(array)
    if a.size == 0:
        raise ImageWriteError("write_png was given an empty image.")
    if a.ndim == 2:
        out = _gray(a, bits)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        if a.dtype != np.uint8 or bits != 8:
            raise ImageWriteError(f"write_png expects a 2-D gray image or an 8-bit uint8 (H, W, 3|4) RGB(A) one, "
                                  f"got {a.dtype} of shape {a.shape} at {bits} bits.")
        out = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA if a.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    else:
        raise ImageWriteError(f"write_png expects a 2-D gray image or (H, W, 3|4) RGB(A), got shape {a.shape}.")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(out), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ImageWriteError(f"OpenCV could not encode a PNG of shape {out.shape}.")
    return encoded.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray, bits: int = 8) -> Path:
    """Write ``array`` as a PNG atomically (temp file + os.replace); returns the path."""
    return write_bytes_atomic(Path(path), encode_png(array, bits))
