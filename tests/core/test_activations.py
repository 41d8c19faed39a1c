"""Hook recording, forward with activations, layer list, regions and channel ranking."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cxr_studio.core.inspect.activations import (
    ForwardResult,
    LayerError,
    Region,
    forward_with_activations,
    list_layers,
    rank_channels,
    record_activations,
)
from cxr_studio.core.pipeline import Geometry


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1),
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(4, 6, 3, padding=1),
            relu2=nn.ReLU(inplace=True),
            drop=nn.Dropout(0.5),
            flat=nn.Flatten(),
            fc=nn.Linear(6 * 8 * 8, 3),
        )
    )
    net.layer_names = {n: n for n in ("conv1", "relu1", "pool1", "conv2", "relu2", "fc")}
    return net


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_record_removes_hooks_and_clones_before_inplace_relu():
    net = tiny_net()
    x = torch.randn(2, 3, 16, 16)
    with record_activations(net, ["conv1", "relu1"]) as acts:
        assert hook_count(net) == 2
        net(x)
    assert hook_count(net) == 0
    assert acts["conv1"].shape == (2, 4, 16, 16)
    assert (acts["conv1"] < 0).any(), "conv1 output must be stored before the in-place ReLU"
    assert torch.equal(acts["relu1"], torch.relu(acts["conv1"]))


def test_record_removes_hooks_on_exception():
    net = tiny_net()
    with pytest.raises(RuntimeError, match="boom"):
        with record_activations(net, None):
            assert hook_count(net) == 6
            raise RuntimeError("boom")
    assert hook_count(net) == 0
    with pytest.raises(RuntimeError):  # a failing forward (wrong input size) also cleans up
        with record_activations(net, ["conv2"]):
            net(torch.randn(1, 3, 20, 20))
    assert hook_count(net) == 0


def test_unknown_layer_is_a_clear_value_error():
    with pytest.raises(LayerError, match="no layer named 'conv9'") as e:
        with record_activations(tiny_net(), ["conv9"]):
            pass
    assert isinstance(e.value, ValueError)


def test_forward_with_activations_shapes_probabilities_and_mode():
    net = tiny_net().train()
    net.drop.eval()  # a module-specific flag that must survive
    x = torch.randn(2, 3, 16, 16)
    res = forward_with_activations(net, x)
    assert isinstance(res, ForwardResult)
    assert list(res.activations) == ["conv1", "relu1", "pool1", "conv2", "relu2", "fc"]
    assert res.activations["conv1"].shape == (4, 16, 16)
    assert res.activations["pool1"].shape == (4, 8, 8)
    assert res.activations["fc"].shape == (3,)
    assert all(a.dtype == np.float32 for a in res.activations.values())
    assert res.input_size == (16, 16)
    np.testing.assert_allclose(res.probabilities.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(res.probabilities, torch.softmax(torch.tensor(res.logits), 0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(res.activations["fc"], res.logits)
    assert net.training and net.conv1.training and not net.drop.training
    assert hook_count(net) == 0
    # ran in eval mode (dropout off): item 0 alone, as numpy (C, H, W), gives the same numbers
    alone = forward_with_activations(net, x[0].numpy(), names=["relu2"])
    assert list(alone.activations) == ["relu2"]
    np.testing.assert_allclose(alone.activations["relu2"], res.activations["relu2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone.logits, res.logits, rtol=1e-5, atol=1e-6)


def test_forward_falls_back_to_leaf_module_paths():
    net = tiny_net()
    del net.layer_names
    res = forward_with_activations(net, torch.randn(1, 3, 16, 16))
    assert "drop" in res.activations and "conv2" in res.activations
    assert res.activations["flat"].shape == (6 * 8 * 8,)


def test_bad_input_shape_is_rejected():
    with pytest.raises(ValueError, match="model input must be"):
        forward_with_activations(tiny_net(), np.zeros((16, 16), np.float32))


def test_list_layers_types_and_shapes():
    net = tiny_net().train()
    info = list_layers(net, 16)
    assert [(i.name, i.type, i.shape) for i in info] == [
        ("conv1", "Conv2d", (4, 16, 16)),
        ("relu1", "ReLU", (4, 16, 16)),
        ("pool1", "MaxPool2d", (4, 8, 8)),
        ("conv2", "Conv2d", (6, 8, 8)),
        ("relu2", "ReLU", (6, 8, 8)),
        ("fc", "Linear", (3,)),
    ]
    assert net.training and hook_count(net) == 0
    with pytest.raises(ValueError, match="cannot run on a 3x20x20 input"):
        list_layers(net, 20)
    assert hook_count(net) == 0


def test_region_masks():
    rect = Region("rect", [(5.2, 1), (2, 3.9)])  # corners in any order; pixel centres inside
    m = rect.to_mask((6, 8))
    assert m.sum() == 3 * 4 and m[1:4, 2:6].all()  # rows 1..3, columns 2..5
    tri = Region("polygon", [(0, 0), (7, 0), (0, 7)])
    t = tri.to_mask((8, 8))
    assert t[1, 1] and not t[7, 7] and 20 < t.sum() < 40
    assert not Region("rect", [(-10, -10), (-5, -5)]).to_mask((8, 8)).any()
    with pytest.raises(ValueError, match="two corners"):
        Region("rect", [(0, 0)])
    with pytest.raises(ValueError, match="at least three"):
        Region("polygon", [(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="'rect' or 'polygon'"):
        Region("circle", [(0, 0), (1, 1)])


def _two_sided_activation() -> np.ndarray:
    """Channel 0 strong on the left half, channel 1 on the right, channel 2 has the largest peak."""
    act = np.zeros((3, 10, 10), np.float32)
    act[0, :, :5] = 1.0
    act[1, :, 5:] = 1.5
    act[2, 0, 0] = 9.0
    return act


def test_rank_by_max_and_mean():
    act = _two_sided_activation()
    assert [c for c, _ in rank_channels(act, "max")] == [2, 1, 0]
    ranked = rank_channels(act, "mean")
    assert [c for c, _ in ranked] == [1, 0, 2]
    assert ranked[0][1] == pytest.approx(0.75)
    assert rank_channels(np.array([0.1, 3.0, -1.0]), "max") == [(1, 3.0), (0, pytest.approx(0.1)), (2, -1.0)]


def test_rank_inside_lungs_and_region_uses_the_geometry():
    # original 100x200 image, crop = columns 100..199 (the right half), model input 20x20
    geo = Geometry(original_size=(100, 200), crop_box=(0, 100, 100, 200), intermediate_size=20, input_size=20)
    act = _two_sided_activation()
    lungs = np.zeros((100, 200), bool)
    lungs[10:90, 105:145] = True  # left part of the crop -> channel 0 region
    ranked = rank_channels(act, "lungs", geometry=geo, lung_mask=lungs)
    assert ranked[0][0] == 0 and ranked[0][1] > ranked[1][1]
    region = Region("rect", [(160, 20), (195, 80)])  # right part of the crop
    ranked = rank_channels(act, "region", geometry=geo, region=region)
    assert ranked[0] == (1, pytest.approx(1.5))
    poly = Region("polygon", [(102, 1), (104, 1), (104, 3), (102, 3)])  # around channel 2's peak
    assert rank_channels(act, "region", geometry=geo, region=poly)[0][0] == 2


def test_rank_errors_are_clear():
    geo = Geometry(original_size=(100, 200), crop_box=(0, 100, 100, 200), intermediate_size=20, input_size=20)
    act = _two_sided_activation()
    with pytest.raises(ValueError, match="Unknown ranking method"):
        rank_channels(act, "median")
    with pytest.raises(ValueError, match="needs the preprocessing geometry"):
        rank_channels(act, "lungs", lung_mask=np.ones((100, 200), bool))
    with pytest.raises(ValueError, match="needs a lung mask"):
        rank_channels(act, "lungs", geometry=geo)
    with pytest.raises(ValueError, match="needs a region"):
        rank_channels(act, "region", geometry=geo)
    with pytest.raises(ValueError, match="does not overlap"):
        rank_channels(act, "region", geometry=geo, region=Region("rect", [(0, 0), (50, 50)]))
    with pytest.raises(ValueError, match="is empty"):
        rank_channels(act, "region", geometry=geo, region=Region("rect", [(-9, -9), (-5, -5)]))
    with pytest.raises(ValueError, match="has shape"):
        rank_channels(act, "lungs", geometry=geo, lung_mask=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="fully connected"):
        rank_channels(np.ones(4), "lungs", geometry=geo, lung_mask=np.ones((100, 200), bool))


def test_cxrnet_from_the_registry():
    registry = pytest.importorskip("cxr_studio.core.models.registry")
    from cxr_studio.core.models.cxrnet import feature_sizes

    net = registry.build_model("cxrnet", width=0.125, fc_width=64, init="kaiming")
    info = {i.name: i for i in list_layers(net, 227)}
    sizes = feature_sizes(227)
    assert list(info)[:4] == ["conv1", "relu1", "norm1", "pool1"] and list(info)[-1] == "fc8"
    assert info["conv5"].type == "Conv2d" and info["conv5"].shape == (32, sizes["conv5"], sizes["conv5"])
    assert info["pool5"].shape == (32, sizes["pool5"], sizes["pool5"]) and info["fc8"].shape == (2,)
    x = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    res = forward_with_activations(net, x)
    assert set(res.activations) == set(net.layer_names)
    assert all(res.activations[n].shape == info[n].shape for n in info)
    assert res.probabilities.shape == (2,) and res.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    assert (res.activations["conv5"] < 0).any() and (res.activations["relu5"] >= 0).all()
    ranked = rank_channels(res.activations["relu5"], "max")
    assert len(ranked) == 32 and ranked[0][1] == pytest.approx(float(res.activations["relu5"].max()))
    assert hook_count(net) == 0
