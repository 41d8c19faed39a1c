"""AlexNet, VGG16 and VGG19 from torchvision with the paper's transfer head.

The paper replaces the last three layers (fc, softmax, classification) with a 2-class fully connected
layer whose learning rate is raised: here ``classifier.6`` becomes ``nn.Linear(4096, num_classes)``,
readable name ``fc8``, listed in ``model.new_layers``. Module paths stay torchvision's, so a bare
torchvision state dict loads directly (all but the 1000-class head).

``weights``:
- ``"imagenet"``: torchvision's ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1`` ...), taken from
  torchvision's cache (``$TORCH_HOME/hub/checkpoints``) or downloaded as torchvision would;
  offline without the file -> :class:`WeightsUnavailableError` saying where to put it;
- a path to a local ``.pth`` state dict (loaded with ``weights_only=True``; the head is dropped);
- ``"none"``: random init, only when asked for;
- ``"empty"``: uninitialised backbone tensors (fast), for loading a full state dict right after;
  checkpoint loading uses it.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torchvision.models as tvm

from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.models.registry import DEFAULT_CLASS_NAMES, register
from cxr_studio.core.models.discovery import building_on_meta

HEAD_PATH = "classifier.6"


class WeightsUnavailableError(ValueError):
    """The ImageNet weights are not cached and could not be downloaded."""


class WeightsFileError(ValueError):
    """A local weights file could not be read or does not fit the architecture."""


_TV: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "alexnet": (tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1),
    "vgg16": (tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
    "vgg19": (tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1),
}


def cache_dir() -> Path:
    """Folder where torchvision keeps downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _alexnet_names(model: nn.Module) -> dict[str, str]:
    names: dict[str, str] = OrderedDict()
    n = 0
    for idx, m in model.features.named_children():
        if isinstance(m, nn.Conv2d):
            n += 1
            names[f"conv{n}"] = f"features.{idx}"
        elif isinstance(m, nn.ReLU):
            names[f"relu{n}"] = f"features.{idx}"
        elif isinstance(m, nn.MaxPool2d):
            names[f"pool{n}"] = f"features.{idx}"
    names.update(_head_names(model, first_fc=6, last=n))
    return dict(names)


def _vgg_names(model: nn.Module) -> dict[str, str]:
    names: dict[str, str] = OrderedDict()
    block, j = 1, 0
    for idx, m in model.features.named_children():
        if isinstance(m, nn.Conv2d):
            j += 1
            names[f"conv{block}_{j}"] = f"features.{idx}"
        elif isinstance(m, nn.ReLU):
            names[f"relu{block}_{j}"] = f"features.{idx}"
        elif isinstance(m, nn.MaxPool2d):
            names[f"pool{block}"] = f"features.{idx}"
            block, j = block + 1, 0
    names.update(_head_names(model, first_fc=6, last=block - 1))
    return dict(names)


def _head_names(model: nn.Module, first_fc: int, last: int) -> dict[str, str]:
    """avgpool, then fc6/relu6/drop6 ... fc8; a dropout is numbered after the layer it follows."""
    names: dict[str, str] = OrderedDict(avgpool="avgpool")
    fc = first_fc - 1
    tag = last
    for idx, m in model.classifier.named_children():
        if isinstance(m, nn.Linear):
            fc += 1
            tag = fc
            names[f"fc{fc}"] = f"classifier.{idx}"
        elif isinstance(m, nn.ReLU):
            names[f"relu{tag}"] = f"classifier.{idx}"
        elif isinstance(m, nn.Dropout):
            names[f"drop{tag}"] = f"classifier.{idx}"
    return dict(names)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsFileError(f"Weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of a safe load means "not usable"
        raise WeightsFileError(
            f"Could not read weights from {path}: it is not a PyTorch state dict that loads safely ({exc})."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsFileError(f"{path} does not hold a state dict (a dict of tensors).")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy every tensor of ``state`` that fits into ``model``, except the head when it does not fit.

    Returns notes on what was skipped (the head); raises :class:`WeightsFileError` when anything
    outside the head is missing, unexpected or of another shape.
    """
    own = model.state_dict()
    head = (f"{HEAD_PATH}.",)
    fit, notes, problems = {}, [], []
    for k, v in state.items():
        if k not in own:
            problems.append(f"unexpected {k}")
        elif own[k].shape != v.shape:
            msg = f"{k} {tuple(v.shape)} in file vs {tuple(own[k].shape)}"
            (notes if k.startswith(head) else problems).append(msg)
        else:
            fit[k] = v
    missing = [k for k in own if k not in state and not k.startswith(head)]
    problems += [f"missing {k}" for k in missing]
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise WeightsFileError(
            f"The weights in {source} do not fit {type(model).__name__}: {'; '.join(problems[:4])}{more}."
        )
    model.load_state_dict(fit, strict=False)
    return [f"head not loaded ({n}); it keeps its random init" for n in notes]


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = _TV[name][1]
    target = cache_dir() / os.path.basename(weights.url)
    try:
        # looked up at call time so tests can replace it
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, socket errors, hash errors
        raise WeightsUnavailableError(
            f"The ImageNet weights for {name} are not in torchvision's cache and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). Put {os.path.basename(weights.url)} at {target} "
            f"(download it from {weights.url} on a machine with internet), pass weights=<path to a .pth "
            f"state dict>, or weights='none' for random initialisation."
        ) from None


def _build(name: str, weights: str | os.PathLike, num_classes: int) -> nn.Module:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', 'none', 'empty' or a file path, got {weights!r}")
    ctor = _TV[name][0]
    key = str(weights).lower()
    notes: list[str] = []
    if key == "none":
        model = ctor(weights=None)
    else:
        # every backbone tensor is overwritten below, so skip torchvision's (slow) random init
        with torch.device("meta"):
            model = ctor(weights=None)
        if not building_on_meta():  # on the meta device (shape checks) nothing is allocated
            model = model.to_empty(device="cpu")
        source = ""
        if key == "imagenet":
            source = f"torchvision's ImageNet {name} weights"
            notes = load_backbone(model, _imagenet_state_dict(name), source)
        elif key != "empty":
            path = Path(weights).expanduser()
            source = str(path)
            notes = load_backbone(model, _read_state_dict(path), source)
        if source:
            notes.append(f"backbone loaded from {source}; its classification head was replaced by a new fc8")
    in_features = model.classifier[6].in_features
    model.classifier[6] = nn.Linear(in_features, int(num_classes))
    nn.init.normal_(model.classifier[6].weight, 0.0, 0.01)
    nn.init.zeros_(model.classifier[6].bias)
    model.layer_names = _alexnet_names(model) if name == "alexnet" else _vgg_names(model)
    model.new_layers = ["fc8"]
    model.default_preprocess = PreprocessSpec.preset("torchvision").to_dict()
    model.class_names = list(DEFAULT_CLASS_NAMES) if num_classes == 2 else [str(i) for i in range(num_classes)]
    model.weights_notes = notes
    return model


_REBUILD = {"weights": "empty"}  # a checkpoint's state dict replaces the weights anyway


@register("alexnet", family="torchvision", rebuild_overrides=_REBUILD)
def alexnet(*, weights: str | os.PathLike = "imagenet", num_classes: int = 2) -> nn.Module:
    """AlexNet (torchvision) with a new 2-class fc8."""
    return _build("alexnet", weights, num_classes)


@register("vgg16", family="torchvision", rebuild_overrides=_REBUILD)
def vgg16(*, weights: str | os.PathLike = "imagenet", num_classes: int = 2) -> nn.Module:
    """VGG16 (torchvision) with a new 2-class fc8."""
    return _build("vgg16", weights, num_classes)


@register("vgg19", family="torchvision", rebuild_overrides=_REBUILD)
def vgg19(*, weights: str | os.PathLike = "imagenet", num_classes: int = 2) -> nn.Module:
    """VGG19 (torchvision) with a new 2-class fc8."""
    return _build("vgg19", weights, num_classes)
