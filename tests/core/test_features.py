"""conv1 mosaics and activation maximisation (progress, cancel, cache, side effects)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cxr_studio.core.inspect.activations import LayerError
from cxr_studio.core.inspect.features import (
    AMSettings,
    Cancelled,
    activation_maximisation,
    clear_cache,
    conv1_mosaic,
    initial_image,
    laplacian_normalise,
    octave_sizes,
    target_activation,
)

FAST = AMSettings(iterations=15, octaves=3, size=32, jitter=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, above all on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_cache()
    yield
    torch.set_num_threads(before)


def tiny_net(in_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 5, 3, padding=1),
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(5, 6, 3, padding=1),
            relu2=nn.ReLU(inplace=True),
            drop=nn.Dropout(0.5),
            flat=nn.Flatten(),
            fc=nn.Linear(6 * 16 * 16, 2),
        )
    )
    net.layer_names = {n: n for n in ("conv1", "relu1", "pool1", "conv2", "relu2", "fc")}
    net.default_preprocess = {"input_size": 32, "channels": in_channels, "normalization": "center"}
    return net


def test_conv1_mosaic_rgb_tiles_per_filter():
    net = tiny_net()
    mosaic = conv1_mosaic(net)
    assert mosaic.shape == (2 * 3 + 1, 3 * 3 + 2, 3) and mosaic.dtype == np.float32  # 5 tiles: 2 rows x 3 cols
    assert (mosaic[3, :, :] == 1.0).all() and (mosaic[:, 3, :] == 1.0).all()  # 1-px white gaps
    w = net.conv1.weight.detach().numpy()
    for i in range(5):
        r, c = divmod(i, 3)
        tile = mosaic[r * 4 : r * 4 + 3, c * 4 : c * 4 + 3]
        expect = w[i].transpose(1, 2, 0)
        expect = (expect - expect.min()) / (expect.max() - expect.min())
        np.testing.assert_allclose(tile, expect, atol=1e-6)
    assert (mosaic[4:, 8:] == 1.0).all()  # the unused sixth cell stays background


def test_conv1_mosaic_gray_and_global():
    net = tiny_net(in_channels=1)
    m = conv1_mosaic(net, normalise="global")
    assert np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 1], m[..., 2])
    tiles = [m[r * 4 : r * 4 + 3, c * 4 : c * 4 + 3, 0] for r, c in (divmod(i, 3) for i in range(5))]
    assert min(t.min() for t in tiles) == 0.0 and max(t.max() for t in tiles) == 1.0
    assert sum(t.min() == 0.0 for t in tiles) == 1, "one global scale: only one tile holds the minimum"
    deeper = conv1_mosaic(net, layer="conv2")  # 6 filters of 5 input channels -> gray, 2x3 grid
    assert deeper.shape == (7, 11, 3)
    with pytest.raises(ValueError, match="Unknown normalisation"):
        conv1_mosaic(net, normalise="layer")
    with pytest.raises(LayerError, match="not a 2-D convolution"):
        conv1_mosaic(net, layer="fc")


def test_laplacian_normalise_balances_bands():
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    checker = (x + y) % 2 * 2 - 1
    grad = 100.0 * np.sin(x / 20.0) + 0.01 * checker  # strong coarse + faint fine detail
    out = laplacian_normalise(grad)
    assert out.shape == (64, 64)
    assert np.sqrt(np.mean(out**2)) == pytest.approx(1.0, rel=1e-4)
    fine_lap = abs(np.mean(out * checker))  # the checkerboard's share
    fine_std = abs(np.mean(grad / grad.std() * checker))
    assert fine_lap > 10 * fine_std, "faint fine detail is lifted relative to plain std scaling"
    assert np.all(laplacian_normalise(np.zeros((16, 16))) == 0)


def test_octave_sizes():
    assert octave_sizes(227, AMSettings(octaves=3, octave_scale=1.4)) == [116, 162, 227]
    assert octave_sizes(64, AMSettings(octaves=1)) == [64]


@pytest.mark.parametrize(("layer", "channel", "cls"), [("relu2", 3, None), ("conv1", 0, None), ("fc", None, 1)])
def test_activation_increases_over_the_starting_noise(layer, channel, cls):
    net = tiny_net().train()
    img = activation_maximisation(net, layer, channel, class_index=cls, settings=FAST)
    assert img.shape == (32, 32) and img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    index = channel if channel is not None else cls
    start = target_activation(net, layer, index, initial_image(net, FAST), FAST)
    end = target_activation(net, layer, index, img, FAST)
    assert end - start > max(0.02, 0.5 * abs(start))
    assert net.training and net.drop.training  # mode restored
    assert all(p.grad is None for p in net.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == 0


def test_progress_reaches_one_and_cancel_stops_early():
    net = tiny_net()
    seen: list[float] = []
    activation_maximisation(net, "conv2", 1, settings=FAST, progress=lambda f, msg: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= FAST.iterations
    cancel = threading.Event()
    calls: list[float] = []

    def progress(f: float, _msg: str) -> None:
        calls.append(f)
        if len(calls) == 3:
            cancel.set()

    settings = AMSettings(iterations=30, size=32)
    with pytest.raises(Cancelled):
        activation_maximisation(net, "conv2", 2, settings=settings, progress=progress, cancel=cancel)
    assert len(calls) == 3 and max(calls) < 1.0
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == 0
    from cxr_studio.core.runtime import engine

    with pytest.raises(engine.Cancelled):  # the worker's own class; cancelled before it starts
        activation_maximisation(net, "conv2", 2, settings=settings, cancel=cancel)


def test_cache_returns_the_same_object_until_weights_change():
    net = tiny_net()
    a = activation_maximisation(net, "conv2", 1, settings=FAST)
    got: list[str] = []
    b = activation_maximisation(net, "conv2", 1, settings=FAST, progress=lambda f, m: got.append(m))
    assert b is a and got == ["cached"]
    assert not a.flags.writeable
    c = activation_maximisation(net, "conv2", 1, settings=AMSettings(iterations=15, octaves=3, size=32, jitter=2, seed=1))
    assert c is not a
    with torch.no_grad():
        net.conv2.weight.mul_(1.5)  # an in-place weight change (as training or loading does)
    d = activation_maximisation(net, "conv2", 1, settings=FAST)
    assert d is not a


def test_bad_requests_are_clear_errors():
    net = tiny_net()
    with pytest.raises(ValueError, match="Choose a channel"):
        activation_maximisation(net, "conv2")
    with pytest.raises(ValueError, match="Index 9 does not exist"):
        activation_maximisation(net, "conv2", 9, settings=FAST)
    with pytest.raises(ValueError, match="octave_scale"):
        activation_maximisation(net, "conv2", 0, settings=AMSettings(octave_scale=0.5))
    with pytest.raises(LayerError):
        activation_maximisation(net, "conv8", 0, settings=FAST)


def test_cxrnet_from_the_registry():
    registry = pytest.importorskip("cxr_studio.core.models.registry")
    net = registry.build_model("cxrnet", width=0.125, fc_width=64, init="kaiming", input_size=99)
    mosaic = conv1_mosaic(net)  # 12 filters of 7x7x3 -> 3 rows x 4 cols
    assert mosaic.shape == (3 * 7 + 2, 4 * 7 + 3, 3)
    s = AMSettings(iterations=6, octaves=2)
    img = activation_maximisation(net, "relu5", 2, settings=s)
    assert img.shape == (99, 99)
    start = target_activation(net, "relu5", 2, initial_image(net, s), s)
    assert target_activation(net, "relu5", 2, img, s) - start > max(0.02, 0.5 * abs(start))
