"""CachedImages: batched fetching gives exactly the per-image tensors, augmentation is a pure
function of (seed, epoch, key), and the DataLoader hands over whole batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_studio.core.pipeline import PreprocessSpec
from cxr_studio.training.loops import make_loader, to_device
from cxr_studio.training.tensors import CachedImages


def _images(n: int = 10, size: int = 40) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("train, size", [(False, 32), (False, 40), (True, 40)])
def test_batch_equals_stacked_items(train: bool, size: int) -> None:
    spec = PreprocessSpec(input_size=32, channels=3, normalization="imagenet")
    ds = CachedImages(_images(size=size), np.arange(10) % 2, spec, train=train, rotation_deg=8, translate_px=3)
    ds.set_epoch(2)
    x, y = ds.__getitems__([4, 1, 7])
    singles = [ds[i] for i in (4, 1, 7)]
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x, torch.stack([s[0] for s in singles]))
    assert y.tolist() == [s[1] for s in singles] == [0, 1, 1]
    # imagenet normalisation differs per channel, so the three planes are not copies of each other
    assert not torch.equal(x[:, 0], x[:, 1])
    if train:
        ds.set_epoch(3)
        assert not torch.equal(ds.__getitems__([4])[0][0], x[0])


def test_loader_yields_whole_batches_in_sampler_order() -> None:
    spec = PreprocessSpec(input_size=40, channels=1, normalization="center")
    imgs = _images()
    ds = CachedImages(imgs, np.arange(10) % 2, spec)
    batches = list(make_loader(ds, 4, sampler=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    first = batches[0][0]
    expected = (torch.from_numpy(imgs[[9, 8, 7, 6]]).float() / 255 - 0.5) / 0.5
    assert torch.allclose(first[:, 0], expected, atol=1e-6)


@pytest.mark.parametrize("normalization", ["center", "none"])
def test_one_channel_widened_as_a_view_crosses_once(normalization: str) -> None:
    spec = PreprocessSpec(input_size=32, channels=3, normalization=normalization)
    ds = CachedImages(_images(size=32), np.arange(10) % 2, spec)
    x, _ = ds.__getitems__([0, 3, 5])
    assert x.shape == (3, 3, 32, 32) and x.stride(1) == 0  # three channels, one in memory
    mean, std = (0.5, 0.5) if normalization == "center" else (0.0, 1.0)
    ref = (torch.from_numpy(_images(size=32)[[0, 3, 5]]).float() / 255.0 - mean) / std
    for c in range(3):
        assert torch.allclose(x[:, c], ref, atol=1e-6)
    moved = to_device(x, torch.device("meta"))  # another device: one channel travels, widened there
    assert moved.device.type == "meta" and moved.shape == x.shape and moved.stride(1) == 0
    assert to_device(x, torch.device("cpu")) is x
    # ImageNet statistics differ per channel: three real planes, copied as they are
    dense, _ = CachedImages(_images(size=32), np.arange(10) % 2,
                            PreprocessSpec(input_size=32, channels=3, normalization="imagenet")).__getitems__([0])
    assert dense.is_contiguous() and to_device(dense, torch.device("meta")).is_contiguous()


def test_intensity_jitter_changes_grey_levels_not_geometry() -> None:
    """Gamma and contrast move the grey levels (differently per epoch, identically on a re-read),
    keep them in 0..1, leave the geometric transform alone, and never touch evaluation tensors."""
    spec = PreprocessSpec(input_size=32, channels=1, normalization="none")
    imgs = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (6, 40, 1))  # a horizontal ramp
    geo = dict(rotation_deg=8, translate_px=3, seed=5)
    plain = CachedImages(imgs, np.arange(6) % 2, spec, train=True, **geo)
    jit = CachedImages(imgs, np.arange(6) % 2, spec, train=True, intensity_jitter=0.3, **geo)
    a, b = plain.pixels(2), jit.pixels(2)
    assert a.shape == b.shape == (32, 32)
    assert 0.0 <= b.min() and b.max() <= 1.0
    assert np.abs(a - b).max() > 0.02  # the grey levels moved
    # ... monotonically: the same geometry, so the two images order their pixels alike
    order = np.argsort(a.ravel(), kind="stable")
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    assert (np.diff(b.ravel()[order]) >= -1e-6).mean() > 0.99
    assert np.array_equal(b, jit.pixels(2))  # a pure function of (seed, epoch, key)
    jit.set_epoch(1)
    assert not np.array_equal(b, jit.pixels(2))
    evaluation = CachedImages(imgs, np.arange(6) % 2, spec, intensity_jitter=0.3)
    assert np.array_equal(evaluation.pixels(2), CachedImages(imgs, np.arange(6) % 2, spec).pixels(2))
