"""Any torchvision classification builder by name: ``resnet50``, ``densenet121``, ``efficientnet_b0``,
``convnext_tiny``, ``mobilenet_v3_large``, ``regnet_y_8gf``, ``vit_b_16``...

Registered lazily through a registry resolver (``model_meta("resnet50")`` works without listing the
~80 names): ``build_model("resnet50", num_classes=3, weights="none")``. ``weights="empty"`` builds on
the meta device and allocates without initialising (checkpoint loading overwrites every tensor).
The names alexnet / vgg16 / vgg19 stay the paper's own builders (readable names ``conv5_3``, ``fc8``).

Layer names are the module paths, in the order the forward pass enters them (found by a pass on the
meta device, see ``discovery``); the number of outputs of a state dict is read from its head.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
import torchvision.models as tvm

from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.models.registry import DEFAULT_CLASS_NAMES, ModelInfo, add_resolver
from cxr_studio.core.models.meta_init import no_init
from cxr_studio.core.models.discovery import attach_layers, building_on_meta, discover

IMAGENET_CLASSES = 1000
_AUX = ("inception_v3", "googlenet")


@functools.lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    """Names of torchvision's classification builders (not detection, segmentation or video)."""
    return tuple(sorted(tvm.list_models(module=tvm)))


def is_torchvision_classifier(name: str) -> bool:
    return name in torchvision_classifiers()


def _ctor_kwargs(name: str, num_classes: int, aux_logits: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"weights": None, "num_classes": int(num_classes)}
    if name in _AUX:
        kw.update(aux_logits=bool(aux_logits), init_weights=False)
    return kw


def _meta_model(name: str, num_classes: int = IMAGENET_CLASSES, aux_logits: bool = False) -> nn.Module:
    with torch.device("meta"), no_init():
        return tvm.get_model_builder(name)(**_ctor_kwargs(name, num_classes, aux_logits))


def _has_hidden_buffers(model: nn.Module) -> bool:
    """Buffers outside the state dict (a checkpoint cannot fill them, so they need a real init)."""
    kept = set(model.state_dict())
    return any(n not in kept for n, _ in model.named_buffers())


@functools.lru_cache(maxsize=None)
def head_keys(name: str) -> tuple[str, ...]:
    """State-dict keys of the layers whose size is the number of classes (``fc.weight``...)."""
    try:
        model = _meta_model(name)
    except (NotImplementedError, RuntimeError):
        model = tvm.get_model_builder(name)(**_ctor_kwargs(name, IMAGENET_CLASSES, False))
    keys = []
    for path, m in model.named_modules():
        out = getattr(m, "out_features", getattr(m, "out_channels", None))
        if out == IMAGENET_CLASSES and isinstance(getattr(m, "weight", None), torch.Tensor):
            keys.append(f"{path}.weight")
    return tuple(keys)


def infer_num_classes(name: str, state: dict[str, torch.Tensor]) -> int | None:
    """Outputs of ``state``'s classification head for architecture ``name`` (None when absent)."""
    for key in head_keys(name):
        t = state.get(key)
        if isinstance(t, torch.Tensor) and t.ndim >= 2:
            return int(t.shape[0])
    return None


def infer_aux_logits(name: str, state: dict[str, torch.Tensor]) -> bool:
    return name in _AUX and any(k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in state)


@functools.lru_cache(maxsize=None)
def default_input_size(name: str) -> int:
    """The crop size of torchvision's weights for ``name`` (224 for most, 299 for inception)."""
    try:
        weights = tvm.get_model_weights(name).DEFAULT
        return int(weights.transforms().crop_size[0])
    except Exception:  # noqa: BLE001 - no weights enum / transform: the common size
        return 224


def _class_names(name: str, num_classes: int) -> list[str]:
    if num_classes == IMAGENET_CLASSES:
        try:
            return list(tvm.get_model_weights(name).DEFAULT.meta["categories"])
        except Exception:  # noqa: BLE001
            pass
    if num_classes == 2:
        return list(DEFAULT_CLASS_NAMES)
    return [str(i) for i in range(num_classes)]


def first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def build_torchvision(name: str, num_classes: int = IMAGENET_CLASSES, weights: str = "none",
                      aux_logits: bool = False) -> nn.Module:
    """torchvision's ``name`` with ``num_classes`` outputs; ``weights`` "none" (random init) or
    "empty" (uninitialised memory, to be filled from a state dict)."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if weights not in ("none", "empty"):
        raise ValueError(f"weights for {name} must be 'none' or 'empty' (give a checkpoint file instead), "
                         f"got {weights!r}")
    size = default_input_size(name)
    try:
        meta = _meta_model(name, num_classes, aux_logits)
    except (NotImplementedError, RuntimeError):  # a builder that reads values while initialising
        if building_on_meta():
            raise
        meta = None
    if meta is not None:
        channels = first_conv_channels(meta)
        found = _discovery(name, int(num_classes), bool(aux_logits), (channels, size, size), meta)
    if meta is not None and building_on_meta():
        model = meta
    elif meta is not None and weights == "empty" and not _has_hidden_buffers(meta):
        model = meta.to_empty(device="cpu")
    else:
        model = tvm.get_model_builder(name)(**_ctor_kwargs(name, num_classes, aux_logits))
    if meta is None:
        channels = first_conv_channels(model)
        found = discover(model, (channels, size, size))
    attach_layers(model, found)
    model.new_layers = []
    model.default_preprocess = PreprocessSpec.preset("torchvision").replace(
        input_size=size, channels=channels).to_dict()
    model.class_names = _class_names(name, int(num_classes))
    return model


_FOUND: dict[tuple, Any] = {}


def _discovery(name: str, num_classes: int, aux_logits: bool, shape: tuple[int, int, int], meta: nn.Module) -> Any:
    """The discovery pass of a torchvision model (the same for every build of the same options:
    a pass on the meta device costs about a forward of real numbers, so it is done once)."""
    key = (name, num_classes, aux_logits, shape)
    if key not in _FOUND:
        _FOUND[key] = discover(meta, shape)
    return _FOUND[key]


def _builder(name: str):
    if name in _AUX:
        def build(*, num_classes: int = IMAGENET_CLASSES, weights: str = "none", aux_logits: bool = False) -> nn.Module:
            return build_torchvision(name, num_classes, weights, aux_logits)
    else:
        def build(*, num_classes: int = IMAGENET_CLASSES, weights: str = "none") -> nn.Module:
            return build_torchvision(name, num_classes, weights)
    build.__qualname__ = f"torchvision_any.{name}"
    return build


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> ModelInfo | None:
    if not is_torchvision_classifier(name):
        return None
    return ModelInfo(name=name, builder=_builder(name), family="torchvision",
                     description=f"torchvision {name}", rebuild_overrides={"weights": "empty"})


add_resolver(_resolve)
