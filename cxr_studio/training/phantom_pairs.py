"""Paired phantom datasets: every seed written twice, normal and abnormal, with the same anatomy and
noise, so the lesion is the only difference the classifier can learn from (the demo model's data).
Layout = ``write_phantom_dataset``'s: ``CXR_png/PHANTOM_<seed>_<label>.png``, ``mask/``, ``lesion_mask/``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ..core.imaging.png import write_png
from ..core.phantoms.phantom import make_phantom


def _write(path: Path, array: np.ndarray) -> None:
    write_png(path, array)


def write_paired_phantoms(out_dir: str | Path, n: int, seed: int = 0, size: int = 512) -> Path:
    """``n`` seeds from ``seed``, each as a normal and an abnormal phantom (2n images; a seed whose
    lesions could not be placed gives only the normal one). Files already there are kept (resumable)."""
    if n < 1:
        raise ValueError(f"the number of phantom pairs must be at least 1, got {n}")
    out = Path(out_dir)
    for sub in ("CXR_png", "mask", "lesion_mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for s in range(seed, seed + n):
        for abnormal in (False, True):
            name = f"PHANTOM_{s:06d}_{int(abnormal)}"
            if (out / "CXR_png" / f"{name}.png").exists():
                continue
            ph = make_phantom(s, size, abnormal=abnormal)
            if ph.label != int(abnormal):
                continue
            _write(out / "mask" / f"{name}_mask.png", ph.lung_mask.astype(np.uint8) * 255)
            _write(out / "lesion_mask" / f"{name}_lesion.png", ph.lesion_mask.astype(np.uint8) * 255)
            _write(out / "CXR_png" / f"{name}.png", np.round(ph.image * 255.0).astype(np.uint8))
    return out
