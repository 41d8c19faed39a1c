"""Reading lung-atlas folders in the NLM layouts.

- Montgomery: ``CXR_png/<name>.png`` with ``ManualMask/leftMask/<name>.png`` and
  ``ManualMask/rightMask/<name>.png`` (merged into one mask);
- Shenzhen (and our phantom datasets): ``CXR_png/<stem>.png`` with ``mask/<stem>_mask.png``;
  images without a mask are skipped.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxr_studio.core.imaging.io import RASTER_SUFFIXES
from cxr_studio.core.lungs.postprocess import LungSegmentationError
from cxr_studio.core.imaging.masks import MaskReadError
from cxr_studio.core.imaging.masks import read_mask as read_mask_files

IMAGE_SUFFIXES = RASTER_SUFFIXES  # the one suffix list (core.io); atlas files are read with OpenCV


class AtlasFolderError(LungSegmentationError):
    """An atlas folder that is missing, empty or not in a known layout."""


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _find_with_stem(folder: Path, stem: str) -> Path | None:
    for suf in IMAGE_SUFFIXES:
        p = folder / (stem + suf)
        if p.is_file():
            return p
    return None


def list_atlas_pairs(folder: Path) -> list[tuple[Path, list[Path]]]:
    """(image path, [mask paths]) for every image of ``folder`` that has a lung mask."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AtlasFolderError(f"Atlas folder {folder} does not exist or is not a folder.")
    img_dir = folder / "CXR_png"
    if not img_dir.is_dir():
        raise AtlasFolderError(
            f"Atlas folder {folder} has no CXR_png sub-folder; expected the NLM Montgomery layout"
            " (CXR_png + ManualMask/leftMask, rightMask) or the Shenzhen layout (CXR_png + mask)."
        )
    pairs: list[tuple[Path, list[Path]]] = []
    left, right = folder / "ManualMask" / "leftMask", folder / "ManualMask" / "rightMask"
    mask_dir = folder / "mask"
    for img in _images(img_dir):
        if left.is_dir() and right.is_dir():
            ms = [_find_with_stem(left, img.stem), _find_with_stem(right, img.stem)]
            if all(m is not None for m in ms):
                pairs.append((img, ms))  # type: ignore[arg-type]
        elif mask_dir.is_dir():
            m = _find_with_stem(mask_dir, img.stem + "_mask")
            if m is not None:
                pairs.append((img, [m]))
    if not pairs:
        raise AtlasFolderError(f"Atlas folder {folder} holds no image with a matching lung mask.")
    return pairs


def read_gray(path: Path) -> np.ndarray:
    """Read an 8- or 16-bit image file as float32 gray 0..1."""
    a = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if a is None or a.size == 0:
        raise AtlasFolderError(f"Cannot read atlas image {path}.")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a mask file as bool, resized (nearest) to ``shape`` (the one mask reader, ``core.imaging.masks``)."""
    try:
        return read_mask_files(path, shape)
    except MaskReadError:
        raise AtlasFolderError(f"Cannot read atlas mask {path}.") from None