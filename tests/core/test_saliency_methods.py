"""The saliency method list: each method against its library oracle (pytorch-grad-cam, Captum),
the caller's model left untouched, placement at receptive-field centres, clear errors."""
from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cxr_studio.core.models.placement import layer_placement, place_on_input
from cxr_studio.core.inspect.saliency_cam import SaliencyError, library_cam
from cxr_studio.core.inspect.saliency_methods import (INPUT_METHODS, LAYER_METHODS, METHODS, Options, map_support,
                                              parse_methods, saliency_map)
from cxr_studio.core.inspect.saliency_perturb import integrated_gradients, occlusion_attribution


def tiny_net(seed: int = 0) -> nn.Module:
    """Unpadded convs (so placement matters) and a classifier, like a small cxrnet."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 5, stride=2), relu1=nn.ReLU(inplace=True), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(8, 12, 3), relu2=nn.ReLU(inplace=True), flat=nn.Flatten(), fc=nn.Linear(12 * 5 * 5, 2)))
    net.layer_names = {n: n for n in ("conv1", "relu1", "pool1", "conv2", "relu2", "fc")}
    return net.eval()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture
def net_and_x():
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    return tiny_net(), x


def test_one_list_of_methods():
    assert METHODS == ("channel-max", "channel-lungs", "gradcam", "gradcam++", "hirescam", "scorecam", "layercam",
                       "eigencam", "occlusion", "integrated-gradients")
    assert set(LAYER_METHODS) | set(INPUT_METHODS) == set(METHODS)
    assert parse_methods("gradcam, occlusion,gradcam") == ["gradcam", "occlusion"]
    assert parse_methods(None) == list(METHODS)
    with pytest.raises(SaliencyError, match="Unknown saliency method bogus"):
        parse_methods("gradcam,bogus")


@pytest.mark.parametrize("method", ["hirescam", "scorecam", "layercam", "eigencam"])
def test_library_cams_are_the_library_at_grid_resolution(net_and_x, method):
    gc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x = net_and_x
    cls = {"hirescam": gc.HiResCAM, "scorecam": gc.ScoreCAM, "layercam": gc.LayerCAM, "eigencam": gc.EigenCAM}[method]
    with cls(model=net, target_layers=[net.relu2]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])[0]
    grid = library_cam(net, x, "relu2", method, 1)
    assert grid.shape == (5, 5) and grid.min() >= 0 and grid.max() <= 1
    stretched = cv2.resize(grid, (32, 32))  # what the library does after its grid map
    assert corr(stretched, ref) >= 0.99


def test_occlusion_matches_captum(net_and_x):
    captum = pytest.importorskip("captum.attr")
    net, x = net_and_x
    ours = occlusion_attribution(net, x, 1, window=8, stride=4, batch_size=7)
    ref = captum.Occlusion(net).attribute(x, target=1, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4))
    assert corr(ours, ref[0].detach().numpy()) >= 0.99
    np.testing.assert_allclose(ours, ref[0].detach().numpy(), atol=1e-4)


def test_integrated_gradients_match_captum(net_and_x):
    captum = pytest.importorskip("captum.attr")
    net, x = net_and_x
    ours = integrated_gradients(net, x, 1, steps=20, batch_size=6)
    ref = captum.IntegratedGradients(net).attribute(x, target=1, n_steps=20)
    assert corr(ours, ref[0].detach().numpy()) >= 0.99
    np.testing.assert_allclose(ours, ref[0].detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_unit_map_and_leaves_the_model_alone(net_and_x, method):
    net, x = net_and_x
    net.train()  # the call must switch to eval and restore this
    for p in net.parameters():
        p.grad = None
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lungs = np.zeros((32, 32), bool)
    lungs[8:24, 4:28] = True
    from cxr_studio.core.pipeline import Geometry

    geo = Geometry(original_size=(32, 32), crop_box=(0, 0, 32, 32), intermediate_size=32, input_size=32)
    s = saliency_map(net, x, method, "relu2", 1, geometry=geo, lung_mask=lungs,
                     options=Options(ig_steps=4, occlusion_window=8, occlusion_stride=4, batch_size=8))
    assert s.map_input.shape == (32, 32) and s.map_input.dtype == np.float32
    assert s.map_input.min() >= 0 and s.map_input.max() <= 1 + 1e-6
    assert net.training and all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.relu2._forward_hooks and not net.relu2._backward_hooks
    if method in LAYER_METHODS:
        support = map_support(net, x, method, "relu2")
        assert not s.map_input[~support].any()  # placed at the cells, nothing outside them
        assert s.layer == "relu2"
    assert (s.channel is not None) == method.startswith("channel")


def test_layer_maps_are_placed_at_receptive_field_centres(net_and_x):
    net, x = net_and_x
    from cxr_studio.core.inspect.saliency import grad_cam

    s = saliency_map(net, x, "gradcam", "relu2", 1)
    grid = grad_cam(net, x, "relu2", 1, grid=True)
    expected = place_on_input(grid, layer_placement(net, "relu2"), 32)
    np.testing.assert_allclose(s.map_input, expected, atol=1e-6)


def test_clear_errors(net_and_x):
    net, x = net_and_x
    with pytest.raises(SaliencyError, match="needs a lung mask"):
        saliency_map(net, x, "channel-lungs", "relu2", 1)
    with pytest.raises(SaliencyError, match="explains a layer"):
        saliency_map(net, x, "gradcam", None, 1)
    with pytest.raises(ValueError, match="Class index 5"):
        saliency_map(net, x, "occlusion", None, 5)


@pytest.mark.parametrize("method", ["channel-max", "layercam", "eigencam"])
def test_views_serve_the_new_methods(method):
    """``core.views.compute_heatmap`` (what the app and the exporter call) knows every method."""
    from cxr_studio.core.models.checkpoint import load_checkpoint
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.pipeline import preprocess
    from cxr_studio.core.resources import DEMO_MODEL, find_resource
    from cxr_studio.core.inspect.views import METHODS as VIEW_METHODS, compute_heatmap

    assert set(METHODS) <= set(VIEW_METHODS) and "activation" in VIEW_METHODS
    ck = load_checkpoint(find_resource(DEMO_MODEL))
    pre = preprocess(make_phantom(5, 256, abnormal=True).radiograph(), ck.spec)
    h = compute_heatmap(ck, pre, None, "relu5", method=method, class_index=1)
    ref = saliency_map(ck.model, pre.tensor(), method, "relu5", 1)
    np.testing.assert_allclose(h.map_input, ref.map_input, atol=1e-6)
    assert h.map_original.shape == (256, 256) and h.method == method and h.class_index == 1
    if method == "channel-max":
        strongest = compute_heatmap(ck, pre, None, "relu5", channel="strongest", method="activation")
        assert h.channel == strongest.channel
        np.testing.assert_allclose(h.map_input, strongest.map_input, atol=1e-6)
