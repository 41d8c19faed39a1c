"""Lesion masks on the training cache's grid, and a training dataset that hands them out with
the images, through the same augmentation.

The image cache (``data.PreprocessCache``) holds each radiograph cropped to the lungs and resized to
the cache size. A lesion mask (``Sample.lesion_path``, nonzero = lesion, drawn on the radiograph) is
taken through the same crop box (the ``Geometry`` that ``core.pipeline.preprocess`` reports for the
same image, lung mask and spec) and resized to the cache size by area averaging; ``LesionImages``
then applies each image's own rotation, shift, crop and flip to its mask. Cached masks live beside the
images in ``<cache>/<spec key>-lesions/``, keyed by the image, its lung masks, the lesion mask and the
image cache's spec key, so a changed outline, spec or segmenter never reuses an old entry.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..core.atomic import atomic_file
from ..core.hashing import file_sha256
from ..core.imaging.masks import MaskReadError, read_mask as core_read_mask
from .data import DatasetError, PreprocessCache, Sample, load_cache_entry, read_mask, read_radiograph
from .tensors import Batch, CachedImages
from ..core.pipeline import preprocess


def lesion_geometry(sample: Sample, spec: Any, use_masks: bool) -> Any:
    """The pipeline's ``Geometry`` (crop box) for ``sample``, exactly as ``data.default_preprocess_fn``
    runs it for the image cache (CLAHE and the intermediate size do not move the crop box: they are
    skipped to save time)."""
    rad = read_radiograph(sample.path)
    mask = read_mask(sample.mask_paths) if use_masks else None
    if mask is not None and mask.shape != rad.shape:
        mask = cv2.resize(mask.astype(np.uint8), (rad.shape[1], rad.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return preprocess(rad, spec.replace(clahe=False, intermediate_size=64), lung_mask=mask).geometry


def read_lesion(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A lesion mask file as bool (H, W) on a radiograph of ``shape`` (resized nearest when it differs)."""
    try:  # the one mask reader (core.imaging.masks); nonzero = lesion
        return core_read_mask(path, tuple(shape), rule="nonzero")
    except MaskReadError as e:
        raise DatasetError(str(e)) from None


class LesionCache:
    """Lesion masks as uint8 (S, S) coverage (0..255) on an image cache's grid."""

    def __init__(self, image_cache: PreprocessCache,
                 geometry_fn: Callable[[Sample, Any, bool], Any] | None = None) -> None:
        self.image_cache = image_cache
        self.size = image_cache.size
        self.folder = image_cache.folder / f"{image_cache.spec_key}-lesions"
        self.geometry_fn = geometry_fn or lesion_geometry
        self.hits = 0
        self.misses = 0
        self.failed: list[str] = []

    def key(self, sample: Sample) -> str:
        assert sample.lesion_path is not None
        parts = [self.image_cache.key(sample), file_sha256(sample.lesion_path), "lesion-v1"]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def get(self, sample: Sample) -> np.ndarray | None:
        """The sample's lesion coverage on the cache grid, or None when it has no lesion mask."""
        if sample.lesion_path is None:
            return None
        path = self.folder / f"{self.key(sample)}.npy"
        arr = load_cache_entry(path, self.size)
        if arr is not None:
            self.hits += 1
            return arr
        self.misses += 1
        try:
            geo = self.geometry_fn(sample, self.image_cache.spec, self.image_cache.use_masks)
        except DatasetError:
            raise
        except ValueError as exc:
            raise DatasetError(f"cannot preprocess {sample.path}: {exc}") from None
        lesion = read_lesion(sample.lesion_path, geo.original_size)
        cover = geo.original_to_grid(lesion.astype(np.float32), (self.size, self.size))
        arr = np.clip(cover * 255.0 + 0.5, 0, 255).astype(np.uint8)
        with atomic_file(path, "wb") as f:
            np.save(f, arr)
        return arr

    def load_all(self, samples: list[Sample], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(index (N,) int64: row in ``masks`` or -1 without a mask, masks (K, S, S) uint8). A mask
        that cannot be placed (its image cannot be preprocessed) is left out and its reason kept in
        ``self.failed``: that image then trains as one without a mask."""
        it: Any = samples
        if progress:
            it = tqdm(samples, desc="lesion masks (cached)", unit="img", leave=False)
        index = np.full(len(samples), -1, dtype=np.int64)
        rows: list[np.ndarray] = []
        self.failed: list[str] = []
        for i, s in enumerate(it):
            try:
                m = self.get(s)
            except DatasetError as exc:  # e.g. the lungs cannot be found: this image trains unguided
                self.failed.append(str(exc))
                continue
            if m is not None:
                index[i] = len(rows)
                rows.append(m)
        masks = np.stack(rows) if rows else np.zeros((0, self.size, self.size), np.uint8)
        return index, masks


def grow_masks(masks: np.ndarray, radius: float) -> np.ndarray:
    """Binary masks (any coverage counts: a lesion smaller than a cached pixel is kept) dilated by a
    disc of ``radius`` pixels, as uint8 0/255."""
    out = np.where(masks > 0, 255, 0).astype(np.uint8)
    r = int(round(radius))
    if r <= 0 or not len(out):
        return out
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return np.stack([cv2.dilate(m, disc) for m in out])


class LesionImages(CachedImages):
    """A training ``CachedImages`` whose batches are ``(x, y, m)``: ``m`` (B, n, n) float32 0..1 is
    each image's (grown) lesion mask through that image's own augmentation; all zero without one."""

    @classmethod
    def wrap(cls, ds: CachedImages, index: np.ndarray, masks: np.ndarray) -> "LesionImages":
        if len(index) != len(ds) or (len(masks) and masks.shape[1:] != ds.images.shape[1:]):
            raise ValueError("lesion masks do not match the dataset's images")
        out = cls.__new__(cls)
        out.__dict__.update(ds.__dict__)
        out.lesion_index = np.asarray(index, dtype=np.int64)
        out.lesion_masks = masks
        return out

    @property
    def n_with_lesion(self) -> int:
        return int((self.lesion_index >= 0).sum())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor, bool]:
        x, y, m, has = self.__getitems__([index])
        return x[0], int(y[0]), m[0], bool(has[0])

    def __getitems__(self, indices: list[int]) -> Batch:
        """``(x, y, m, has)``: ``has`` (B,) bool tells an image with a lesion mask (possibly empty,
        e.g. a normal phantom's) from one without (``m`` all zero)."""
        x, y = super().__getitems__(indices)
        m = np.zeros((len(indices), self.n, self.n), np.float32)
        has = np.zeros(len(indices), bool)
        for j, i in enumerate(indices):
            k = int(self.lesion_index[int(i)])
            if k >= 0:
                has[j] = True
                m[j] = np.asarray(self.transform(int(i), self.lesion_masks[k]), dtype=np.float32) * (1.0 / 255.0)
        return Batch((x, y, torch.from_numpy(m), torch.from_numpy(has)))
