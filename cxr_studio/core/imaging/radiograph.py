"""The `Radiograph` value: pixels in 0..1 plus what we know about where they came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Radiograph:
    """A grayscale radiograph.

    ``pixels`` is float32, shape (H, W), values in 0..1, bone bright.
    ``meta`` holds at least ``path`` (str or None), ``format`` (e.g. "PNG", "DICOM", "phantom"),
    ``bit_depth`` (int), ``photometric`` (e.g. "MONOCHROME2"), ``original_size`` ((H, W)) and
    ``pixel_spacing`` ((row_mm, col_mm) or None).
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim != 2:
            raise ValueError(f"Radiograph pixels must be 2-D (H, W), got shape {px.shape}")
        if px.dtype != np.float32:
            px = px.astype(np.float32)
        self.pixels = px
        self.meta.setdefault("path", None)
        self.meta.setdefault("format", "array")
        self.meta.setdefault("bit_depth", None)
        self.meta.setdefault("photometric", "MONOCHROME2")
        self.meta.setdefault("original_size", tuple(px.shape))
        self.meta.setdefault("pixel_spacing", None)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    @property
    def path(self) -> str | None:
        return self.meta.get("path")

    @classmethod
    def from_array(cls, pixels: np.ndarray, **meta: Any) -> "Radiograph":
        """Wrap an array (any numeric dtype) scaled to 0..1 by its dtype range or min/max."""
        a = np.asarray(pixels)
        if a.dtype == np.uint8:
            f = a.astype(np.float32) / 255.0
        elif a.dtype == np.uint16:
            f = a.astype(np.float32) / 65535.0
        else:
            f = a.astype(np.float32)
            lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
            if lo < 0.0 or hi > 1.0:
                f = (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)
        return cls(np.clip(f, 0.0, 1.0).astype(np.float32), dict(meta))
