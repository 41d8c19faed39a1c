"""Cached images -> model tensors, with the paper's augmentation (rotations and translations)
and random crops. Randomness is a pure function of (seed, epoch, index): runs are reproducible
and a resumed run sees exactly the batches an uninterrupted one would."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from ..core.imaging.spec import NORMALIZATIONS


class CachedImages(Dataset):
    """(N, S, S) uint8 images + labels -> ((C, n, n) float32 normalised, label); batches come from
    ``__getitems__`` (use ``collate`` below as the DataLoader's ``collate_fn``). When every channel
    is normalised alike (all but ImageNet's statistics) a batch's C channels are one channel widened
    as a view (stride 0), which ``loops.to_device`` copies once and widens on the device."""

    def __init__(
        self,
        images: np.ndarray,
        labels: list[int] | np.ndarray,
        spec: Any,
        train: bool = False,
        rotation_deg: float = 0.0,
        translate_px: float = 0.0,
        hflip: bool = False,
        intensity_jitter: float = 0.0,
        seed: int = 0,
        aug_keys: np.ndarray | None = None,
    ) -> None:
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S) uint8 images, got {images.shape} {images.dtype}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n = int(spec.input_size)
        self.channels = int(spec.channels)
        mean, std = NORMALIZATIONS[spec.normalization]
        c = self.channels
        self.mean = np.broadcast_to(np.asarray(mean, np.float32).reshape(-1, 1, 1)[:c], (c, 1, 1)).copy()
        self.std = np.broadcast_to(np.asarray(std, np.float32).reshape(-1, 1, 1)[:c], (c, 1, 1)).copy()
        self.same_stats = bool((self.mean == self.mean[0]).all() and (self.std == self.std[0]).all())
        self.train = train
        self.rotation_deg = float(rotation_deg)
        self.translate_px = float(translate_px)
        self.hflip = hflip
        self.intensity_jitter = float(intensity_jitter)
        self.seed = int(seed)
        self.epoch = 0
        # images with the same key get the same random transform (paired phantoms stay aligned)
        self.aug_keys = np.arange(len(images)) if aug_keys is None else np.asarray(aug_keys, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, index: int) -> np.ndarray:
        """(n, n) float32 0..1 for one image (augmented when training)."""
        px = np.ascontiguousarray(self.transform(index, self.images[index]), dtype=np.float32) * (1.0 / 255.0)
        if self.train and self.intensity_jitter:
            px = self.jitter_intensity(index, px)
        return px

    def jitter_intensity(self, index: int, px: np.ndarray) -> np.ndarray:
        """Random gamma and contrast, each a factor exp(U(-j, j)) (j = ``intensity_jitter``): the
        gamma bends the grey levels, the contrast scales them about the image's mean; clipped to
        0..1. Pixels only: a lesion mask following ``transform`` is untouched. Its own random
        stream, so the geometric transform of an image is the same with and without it."""
        rng = np.random.default_rng([self.seed, self.epoch, int(self.aug_keys[index]), 1])
        gamma, contrast = np.exp(rng.uniform(-self.intensity_jitter, self.intensity_jitter, 2))
        px = np.power(px, np.float32(gamma))  # px is 0..1 (uint8 / 255)
        mean = np.float32(px.mean())
        return np.clip((px - mean) * np.float32(contrast) + mean, 0.0, 1.0).astype(np.float32, copy=False)

    def transform(self, index: int, img: np.ndarray) -> np.ndarray:
        """``img`` (S, S) through image ``index``'s augmentation (training) or resize (evaluation):
        another array of the cached size (e.g. the image's lesion mask) follows the image exactly."""
        s = img.shape[0]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(self.aug_keys[index])])
            angle = rng.uniform(-self.rotation_deg, self.rotation_deg) if self.rotation_deg else 0.0
            tx, ty = (rng.uniform(-self.translate_px, self.translate_px, 2) if self.translate_px else (0.0, 0.0))
            if angle or tx or ty:
                m = cv2.getRotationMatrix2D(((s - 1) / 2.0, (s - 1) / 2.0), float(angle), 1.0)
                m[:, 2] += (tx, ty)
                img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            if s > self.n:
                y, x = rng.integers(0, s - self.n + 1, 2)
                img = img[y : y + self.n, x : x + self.n]
            if self.hflip and rng.random() < 0.5:
                img = img[:, ::-1]
        elif s != self.n:  # evaluation sees the whole image, as the app does
            img = cv2.resize(img, (self.n, self.n), interpolation=cv2.INTER_AREA)
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.__getitems__([index])
        return x[0], int(y[0])

    def __getitems__(self, indices: list[int]) -> "Batch":
        """A whole batch at once (the DataLoader calls this): pixels gathered (and augmented) per
        image, then normalised and widened to ``channels`` once per batch, not once per image."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.train or self.images.shape[1] != self.n:
            px = np.stack([self.pixels(int(i)) for i in idx]) if len(idx) else np.zeros((0, self.n, self.n), np.float32)
        else:
            px = self.images[idx].astype(np.float32) * np.float32(1.0 / 255.0)
        if self.same_stats:  # one channel, widened as a view: a third of the bytes to copy to a GPU
            x = ((torch.from_numpy(px) - float(self.mean[0, 0, 0])) / float(self.std[0, 0, 0]))[:, None]
            x = x.expand(-1, self.channels, -1, -1)
        else:
            x = (torch.from_numpy(px)[:, None] - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)
        return Batch((x, torch.from_numpy(self.labels[idx])))


class Batch(tuple):
    """(x, y) already collated by ``CachedImages.__getitems__``; ``collate`` passes it through."""


def collate(items: Any) -> Any:
    """DataLoader ``collate_fn``: batches made by ``__getitems__`` as they are, lists of samples stacked."""
    if isinstance(items, Batch):
        return tuple(items)
    return default_collate(items)


class GroupedSampler(Sampler[int]):
    """Shuffles groups (e.g. a phantom's normal + abnormal versions) and yields their members one
    after the other, so a batch holds whole pairs: the lesion is then the only thing that differs
    between the classes inside every batch. Deterministic per (seed, epoch)."""

    def __init__(self, group_ids: np.ndarray, seed: int = 0) -> None:
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.seed = int(seed)
        self.epoch = 0
        order = np.argsort(self.group_ids, kind="stable")
        bounds = np.flatnonzero(np.diff(self.group_ids[order])) + 1
        self.groups = np.split(order, bounds) if len(order) else []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch, 17]).permutation(len(self.groups))
        for g in perm:
            yield from (int(i) for i in self.groups[g])

    def __len__(self) -> int:
        return len(self.group_ids)
