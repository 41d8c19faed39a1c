"""Receptive-field placement: layer maps drawn where their cells look, masks sampled where they are."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from cxr_studio.core.models import build_model
from cxr_studio.core.models.placement import Placement, layer_placement, place_on_input, sample_on_grid


def _delta_net() -> nn.Module:
    """Unpadded conv (a centred delta kernel: output = shifted input) -> maxpool, like cxrnet's start."""
    conv = nn.Conv2d(1, 1, 7, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 3, 3] = 1.0
    net = nn.Sequential(OrderedDict(conv1=conv, pool1=nn.MaxPool2d(3, 2), conv2=nn.Conv2d(1, 1, 3)))
    with torch.no_grad():
        net.conv2.weight.zero_()
        net.conv2.weight[0, 0, 1, 1] = 1.0
        net.conv2.bias.zero_()
    net.layer_names = {"conv1": "conv1", "pool1": "pool1", "conv2": "conv2"}
    return net


def test_cxrnet_relu5_cells_sit_on_input_pixels_37_to_189():
    model = build_model("cxrnet", width=0.125, fc_width=16, init="empty")
    p = layer_placement(model, "relu5")
    assert p == Placement(8.0, 37.0)
    assert p.centres(20)[[0, -1]].tolist() == [37.0, 189.0]
    assert layer_placement(model, "fc6") is None  # after the flatten there is no grid


def test_vgg16_conv5_3_is_nearly_stretched():
    model = build_model("vgg16", weights="empty")
    assert layer_placement(model, "conv5_3") == Placement(16.0, 7.5)


def test_a_spot_in_the_input_peaks_at_the_same_place_after_placement():
    net = _delta_net().eval()
    x = torch.zeros(1, 1, 227, 227)
    spot = (20, 205)  # (x, y), near a corner where the shift is largest
    x[0, 0, spot[1] - 3:spot[1] + 4, spot[0] - 3:spot[0] + 4] = 1.0
    with torch.no_grad():
        grid = net(x)[0, 0].numpy()
    placed = place_on_input(grid, layer_placement(net, "conv2"), 227)
    ys, xs = np.nonzero(placed >= placed.max() - 1e-6)
    assert abs(xs.mean() - spot[0]) <= 2.5 and abs(ys.mean() - spot[1]) <= 2.5
    stretched = place_on_input(grid, None, 227)
    ys2, xs2 = np.nonzero(stretched >= stretched.max() - 1e-6)
    assert abs(xs2.mean() - spot[0]) > 5 and abs(ys2.mean() - spot[1]) > 5  # the naive stretch misses it


def test_outside_the_cells_span_is_zero_and_unknown_placement_stretches():
    m = np.ones((20, 20), np.float32)
    placed = place_on_input(m, Placement(8.0, 37.0), 227)
    assert placed[:33].max() == 0.0 and placed[:, 194:].max() == 0.0
    assert placed[40:180, 40:180].min() == 1.0
    assert place_on_input(m, None, 227).min() == 1.0


def test_sample_on_grid_reads_the_mask_at_cell_centres():
    mask = np.zeros((227, 227), np.float32)
    mask[:, :113] = 1.0  # left half of the input
    g = sample_on_grid(mask, Placement(8.0, 37.0), (20, 20))
    centres = Placement(8.0, 37.0).centres(20)
    assert np.allclose(g[:, centres < 105], 1.0) and np.allclose(g[:, centres > 121], 0.0)
