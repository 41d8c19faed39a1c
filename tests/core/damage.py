"""Damaged copies of a file and the check that reading them only ever fails with ImageReadError."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cxr_studio.core.imaging.io import ImageReadError, read_image


def assert_damage_only_raises_image_read_error(data: bytes, folder: Path, suffix: str, first: int = 1,
                                               seed: int = 9) -> None:
    """12 truncations and 12 copies with 4 flipped bytes (at or after byte ``first``): each reads as
    a valid 0..1 float image or raises ImageReadError, never anything else."""
    rng = np.random.default_rng(seed)
    variants = [data[:n] for n in np.linspace(first, len(data) - 1, 12).astype(int)]
    for _ in range(12):
        b = bytearray(data)
        for i in rng.integers(first, len(b), 4):
            b[i] ^= 0xFF
        variants.append(bytes(b))
    for i, v in enumerate(variants):
        p = folder / f"v{i}{suffix}"
        p.write_bytes(v)
        try:
            r = read_image(p)
        except ImageReadError:
            continue
        assert r.pixels.dtype == np.float32 and 0.0 <= r.pixels.min() <= r.pixels.max() <= 1.0
