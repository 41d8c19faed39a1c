"""The paper's custom CNN ("cxrnet"), built from DESIGN.md's reading of the text.

The paper (Sivaramakrishnan, Antani et al., IEEE LSC 2017) lists, for a 227x227x3 input:
conv1 96 7x7 stride 2 -> ReLU -> LRN -> max-pool 3/2; conv2 128 3x3 -> ReLU -> LRN -> max-pool 3/2;
conv3 256, conv4 256, conv5 256 (3x3, ReLU, no pooling between them); fc 4096 -> fc 4096 -> fc 2 ->
softmax; dropout 0.5 on the first two fc layers; weights drawn from N(0, 0.01).

The text gives neither padding nor a pool after conv5. Our reading (DESIGN.md's recommendation):
MATLAB's default of **no padding**, and a **max-pool 3/2 after conv5** as in AlexNet. Then
227 -> conv1 111 -> pool1 55 -> conv2 53 -> pool2 26 -> conv3 24 -> conv4 22 -> conv5 20x20 ->
pool5 9x9, so fc6 has 256*9*9 = 20,736 inputs and the network has 103,328,514 parameters (about
103.3M, fewer than VGG16's 138M, as the paper says; padded convolutions would give 195.6M, more than
VGG16, contradicting it). LRN is AlexNet's: ``LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)``.

Options: ``width`` multiplies the conv channel counts (0.25 for the small demo model), ``fc_width``
sets the two hidden fc sizes, ``input_size`` the square input side (fc6's inputs follow from it),
``head`` is ``"fc"`` (the paper's fc6 -> fc7 -> fc8) or ``"gap"`` (a global average pool of
pool5 straight into fc8, as in CAM: no hidden fc layers, so the class score is linear in each
channel's mean and ``fc_width`` is unused), ``norm`` is ``"lrn"`` (the paper's LRN after conv1/conv2)
or ``"batch"`` (BatchNorm between every conv and its ReLU, no LRN: a trainer variant; the layer names
and feature sizes stay the paper's, with ``bn1`` ... ``bn5`` added), ``init`` is ``"paper"`` (N(0, 0.01) weights, zero
biases: literal, but it tends to stay at chance) or ``"kaiming"`` (He init: the trainer's tuned
variant); ``"empty"`` leaves the memory uninitialised (fast), for loading a state dict right after
(checkpoint loading uses it).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.models.registry import DEFAULT_CLASS_NAMES, register
from cxr_studio.core.models.discovery import building_on_meta

INITS = ("paper", "kaiming", "empty")
HEADS = ("fc", "gap")
NORMS = ("lrn", "batch")
BASE_CHANNELS = (96, 128, 256, 256, 256)


def _conv_out(n: int, kernel: int, stride: int = 1) -> int:
    return (n - kernel) // stride + 1


def feature_sizes(input_size: int) -> dict[str, int]:
    """Spatial side of each stage's output for a square input (no padding)."""
    s: dict[str, int] = {}
    n = _conv_out(input_size, 7, 2)
    s["conv1"] = n
    n = _conv_out(n, 3, 2)
    s["pool1"] = n
    n = _conv_out(n, 3)
    s["conv2"] = n
    n = _conv_out(n, 3, 2)
    s["pool2"] = n
    for name in ("conv3", "conv4", "conv5"):
        n = _conv_out(n, 3)
        s[name] = n
    s["pool5"] = _conv_out(n, 3, 2)
    return s


def _min_input_size() -> int:
    n = 8
    while min(feature_sizes(n).values()) < 1:
        n += 1
    return n


class CXRNet(nn.Module):
    """``features`` (conv1 ... pool5) -> flatten -> ``classifier`` (fc6 ... fc8); with the "gap" head
    the classifier (gap, flatten, drop8, fc8) takes the feature maps as they are."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, flatten: bool = True) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.flatten = bool(flatten)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.classifier(torch.flatten(h, 1) if self.flatten else h)


def _init_weights(model: CXRNet, init: str) -> None:
    if init == "empty":
        return
    last = model.classifier.fc8
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "paper" or m is last:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # gamma 1, beta 0, running statistics 0 / 1 (to_empty left them undefined)


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


@register("cxrnet", family="cxrnet", rebuild_overrides={"init": "empty"})
def cxrnet(
    *,
    width: float = 1.0,
    fc_width: int = 4096,
    input_size: int = 227,
    num_classes: int = 2,
    init: str = "paper",
    dropout: float = 0.5,
    in_channels: int = 3,
    head: str = "fc",
    norm: str = "lrn",
) -> CXRNet:
    """The paper's custom CNN: 5 conv (LRN after conv1/conv2) + 3 fc, about 103.3M parameters."""
    if not (0 < float(width) <= 4):
        raise ValueError(f"cxrnet width must be in (0, 4], got {width}")
    if int(fc_width) < 1 or int(num_classes) < 1:
        raise ValueError(f"cxrnet fc_width and num_classes must be positive, got {fc_width}, {num_classes}")
    if init not in INITS:
        raise ValueError(f"cxrnet init must be one of {INITS}, got {init!r}")
    if head not in HEADS:
        raise ValueError(f"cxrnet head must be one of {HEADS}, got {head!r}")
    if norm not in NORMS:
        raise ValueError(f"cxrnet norm must be one of {NORMS}, got {norm!r}")
    if not (0.0 <= float(dropout) < 1.0):
        raise ValueError(f"cxrnet dropout must be in [0, 1), got {dropout}")
    if in_channels not in (1, 3):
        raise ValueError(f"cxrnet in_channels must be 1 or 3, got {in_channels}")
    sizes = feature_sizes(int(input_size))
    if min(sizes.values()) < 1:
        raise ValueError(f"cxrnet input_size {input_size} is too small; the smallest is {_min_input_size()}")
    c1, c2, c3, c4, c5 = (max(1, int(round(c * float(width)))) for c in BASE_CHANNELS)
    # build on the meta device (no allocation, no default init), allocate, then apply our own init
    with torch.device("meta"):
        model = _layers(in_channels, (c1, c2, c3, c4, c5), sizes["pool5"], int(fc_width), int(num_classes), dropout,
                        head, norm)
    if not building_on_meta():  # on the meta device (shape checks) nothing is allocated
        model = model.to_empty(device="cpu")
    _init_weights(model, init)
    names = OrderedDict((n, f"features.{n}") for n, _ in model.features.named_children())
    names.update((n, f"classifier.{n}") for n, _ in model.classifier.named_children())
    model.layer_names = dict(names)
    model.new_layers = []  # trained from scratch: every layer is new, none is transferred
    model.default_preprocess = PreprocessSpec.preset("paper").replace(
        input_size=int(input_size), channels=int(in_channels)
    ).to_dict()
    model.class_names = list(DEFAULT_CLASS_NAMES) if num_classes == 2 else [str(i) for i in range(num_classes)]
    return model


def _layers(
    in_channels: int, channels: tuple[int, ...], pool5: int, fc_width: int, num_classes: int, dropout: float,
    head: str = "fc", norm: str = "lrn",
) -> CXRNet:
    c1, c2, c3, c4, c5 = channels
    convs = {
        "conv1": nn.Conv2d(in_channels, c1, 7, stride=2), "conv2": nn.Conv2d(c1, c2, 3),
        "conv3": nn.Conv2d(c2, c3, 3), "conv4": nn.Conv2d(c3, c4, 3), "conv5": nn.Conv2d(c4, c5, 3),
    }
    stages: list[tuple[str, nn.Module]] = []
    for i, (name, conv) in enumerate(convs.items(), start=1):
        stages.append((name, conv))
        if norm == "batch":
            stages.append((f"bn{i}", nn.BatchNorm2d(conv.out_channels)))
        stages.append((f"relu{i}", nn.ReLU(inplace=True)))
        if i <= 2 and norm == "lrn":
            stages.append((f"norm{i}", _lrn()))
        if i in (1, 2, 5):
            stages.append((f"pool{i}", nn.MaxPool2d(3, 2)))
    features = nn.Sequential(OrderedDict(stages))
    if head == "gap":
        head_layers = nn.Sequential(
            OrderedDict(
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                drop8=nn.Dropout(float(dropout)),
                fc8=nn.Linear(c5, num_classes),
            )
        )
        return CXRNet(features, head_layers, flatten=False)
    flat = c5 * pool5**2
    classifier = nn.Sequential(
        OrderedDict(
            fc6=nn.Linear(flat, fc_width),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout(float(dropout)),
            fc7=nn.Linear(fc_width, fc_width),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout(float(dropout)),
            fc8=nn.Linear(fc_width, num_classes),
        )
    )
    return CXRNet(features, classifier)


@register("cxrnet_narrow", family="cxrnet", rebuild_overrides={"init": "empty"})
def cxrnet_narrow(
    *,
    width: float = 0.25,
    fc_width: int = 256,
    input_size: int = 227,
    num_classes: int = 2,
    init: str = "kaiming",
    dropout: float = 0.5,
    in_channels: int = 3,
    head: str = "fc",
    norm: str = "lrn",
) -> CXRNet:
    """cxrnet at a quarter of the channels and 256-wide fc layers (the small demo model)."""
    return cxrnet(
        width=width,
        fc_width=fc_width,
        input_size=input_size,
        num_classes=num_classes,
        init=init,
        dropout=dropout,
        in_channels=in_channels,
        head=head,
        norm=norm,
    )
