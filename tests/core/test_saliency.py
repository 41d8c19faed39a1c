"""Channel maps and Grad-CAM / Grad-CAM++ against the pytorch-grad-cam reference."""
from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cxr_studio.core.inspect.activations import LayerError
from cxr_studio.core.pipeline import Geometry
from cxr_studio.core.inspect.saliency import channel_map, channel_maps, grad_cam, to_original

gc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1),
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 12, 3, padding=1),
            relu2=nn.ReLU(),
            drop=nn.Dropout(0.5),
            flat=nn.Flatten(),
            fc=nn.Linear(12 * 10 * 10, 3),
        )
    )
    net.layer_names = {n: n for n in ("conv1", "relu1", "pool1", "conv2", "relu2", "fc")}
    return net


def reference(model: nn.Module, x: torch.Tensor, module: nn.Module, k: int | None, plus: bool) -> np.ndarray:
    cls = gc.GradCAMPlusPlus if plus else gc.GradCAM
    targets = None if k is None else [ClassifierOutputTarget(k)]
    with cls(model=model, target_layers=[module]) as cam:
        return cam(input_tensor=x, targets=targets)[0]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_channel_map_scales():
    act = np.zeros((3, 4, 5), np.float32)
    act[0] = np.arange(20).reshape(4, 5) + 10.0
    act[1] = 3.0  # constant channel
    act[2, 1, 1] = 40.0
    m = channel_map(act, 0)
    assert m.shape == (4, 5) and m.dtype == np.float32
    assert m.min() == 0.0 and m.max() == 1.0 and m[0, 1] == pytest.approx(1 / 19)
    assert not channel_map(act, 1).any()
    layer = channel_map(act, 0, scale="layer")
    assert layer.max() == pytest.approx(29 / 40) and layer.min() == pytest.approx(10 / 40)
    assert channel_map(act, 1, scale="layer") == pytest.approx(np.full((4, 5), 3 / 40))
    neg = act - 50.0  # non-ReLU output: the layer minimum becomes 0
    assert channel_map(neg, 2, scale="layer").max() == 1.0 and channel_map(neg, 2, scale="layer").min() == 0.0
    with pytest.raises(ValueError, match="channels 0..2"):
        channel_map(act, 3)
    with pytest.raises(ValueError, match="Unknown scale"):
        channel_map(act, 0, scale="global")


@pytest.mark.parametrize("scale", ["channel", "layer"])
def test_channel_maps_equal_channel_map_per_channel(scale):
    rng = np.random.default_rng(0)
    act = rng.normal(size=(5, 6, 7)).astype(np.float32)
    act[2] = 1.5  # constant channel
    all_maps = channel_maps(act, scale)
    assert all_maps.shape == act.shape and all_maps.dtype == np.float32
    for c in range(5):
        np.testing.assert_allclose(all_maps[c], channel_map(act, c, scale), atol=1e-6)
    with pytest.raises(ValueError, match="must be"):
        channel_maps(act[0], scale)


def test_to_original_uses_the_geometry():
    geo = Geometry(original_size=(40, 60), crop_box=(10, 20, 30, 60), intermediate_size=8, input_size=8)
    m = np.ones((4, 4), np.float32)
    out = to_original(m, geo)
    assert out.shape == (40, 60)
    assert out[10:30, 20:60].min() == 1.0 and out[:10].max() == 0.0 and out[:, :20].max() == 0.0


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("layer", ["conv2", "relu2", "pool1"])
@pytest.mark.parametrize("k", [None, 0, 2])
def test_tiny_net_matches_reference(layer, plus, k):
    net = tiny_net().train()
    x = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    ours = grad_cam(net, x, layer, class_index=k, plus=plus)
    assert ours.shape == (20, 20) and ours.dtype == np.float32
    assert net.training, "the caller's mode is restored"
    ref_net = copy.deepcopy(net)
    ref = reference(ref_net, x, ref_net.get_submodule(layer), k, plus)
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    if ref.max() > 0:  # an all-negative weighted sum gives a zero map in both
        assert ours.min() >= 0.0 and ours.max() == pytest.approx(1.0, abs=1e-5)
        assert corr(ours, ref) >= 0.99
    else:
        assert not ours.any()


def test_model_is_left_unchanged_and_no_grad_context_is_fine():
    net = tiny_net()
    net.conv1.weight.requires_grad_(False)
    net.drop.train()
    net.eval()
    net.drop.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        m = grad_cam(net, torch.randn(3, 20, 20), "relu2")  # (C, H, W) input, predicted class
    assert m.shape == (20, 20) and m.max() > 0.99
    assert all(p.grad is None for p in net.parameters())
    assert not net.conv1.weight.requires_grad and net.conv2.weight.requires_grad
    assert not net.training and net.drop.training
    assert sum(len(mod._forward_hooks) for mod in net.modules()) == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.is_grad_enabled()  # restored after the with block ended; inside it stayed off


def test_grad_mode_of_the_caller_is_restored():
    net = tiny_net()
    with torch.no_grad():
        grad_cam(net, torch.randn(1, 3, 20, 20), "conv2")
        assert not torch.is_grad_enabled()
    with torch.enable_grad():
        grad_cam(net, torch.randn(1, 3, 20, 20), "conv2")
        assert torch.is_grad_enabled()


def test_works_when_nothing_requires_grad():
    net = tiny_net()
    for p in net.parameters():
        p.requires_grad_(False)
    m = grad_cam(net, torch.randn(1, 3, 20, 20), "conv1", class_index=2)
    assert m.shape == (20, 20) and np.isfinite(m).all() and m.max() > 0.99
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_errors_are_clear_and_leave_no_hooks():
    net = tiny_net()
    x = torch.randn(1, 3, 20, 20)
    with pytest.raises(LayerError, match="spatial output"):
        grad_cam(net, x, "fc")
    with pytest.raises(ValueError, match="Class index 5 does not exist"):
        grad_cam(net, x, "relu2", class_index=5)
    with pytest.raises(LayerError, match="no layer named"):
        grad_cam(net, x, "conv7")
    assert sum(len(mod._forward_hooks) for mod in net.modules()) == 0
    assert torch.is_grad_enabled()


def test_vgg16_matches_reference_and_ignores_inplace_aliasing():
    """Oracle on torchvision VGG16 (random weights, seeded): at relu5_3 (features.29) directly;
    at conv5_3 (features.28), which torchvision follows with an in-place ReLU, the reference
    reads the ReLU-overwritten tensor, so it runs with the ReLUs switched to not in place."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vgg = tv.models.vgg16(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours = grad_cam(vgg, x, "features.29", class_index=3)
    ours_pp = grad_cam(vgg, x, "features.28", class_index=3, plus=True)
    assert all(p.grad is None for p in vgg.parameters())
    ref = reference(vgg, x, vgg.features[29], 3, plus=False)
    assert ours.shape == (224, 224)
    assert corr(ours, ref) >= 0.99
    relus = [mod for mod in vgg.modules() if isinstance(mod, nn.ReLU)]
    for mod in relus:
        mod.inplace = False
    ref_pp = reference(vgg, x, vgg.features[28], 3, plus=True)
    for mod in relus:
        mod.inplace = True
    assert corr(ours_pp, ref_pp) >= 0.99


def test_cxrnet_from_the_registry_matches_reference():
    registry = pytest.importorskip("cxr_studio.core.models.registry")
    layers = pytest.importorskip("cxr_studio.core.models.layers")
    torch.manual_seed(0)  # not the order the tests happen to run in (under some draws the map is all zero)
    net = registry.build_model("cxrnet", width=0.125, fc_width=64, init="kaiming")
    layer = layers.deepest_conv(net)
    assert layer == "relu5"
    x = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    for plus in (False, True):
        ours = grad_cam(net, x, layer, plus=plus)
        assert ours.shape == (227, 227)
        ref = reference(net, x, layers.resolve_layer(net, layer), None, plus)
        assert np.ptp(ref) > 0  # a map to compare, not two blank ones
        assert corr(ours, ref) >= 0.99
