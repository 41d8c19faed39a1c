"""Readable layer names: look a layer up, list the conv layers, find the deepest one.

Every registered model carries ``model.layer_names`` (readable name -> module path, forward order).
Models without it (a plain ``nn.Module``) fall back to their module paths.
"""
from __future__ import annotations

import torch.nn as nn
import torch

from cxr_studio.core.models.registry import build_model


class LayerError(ValueError):
    """A layer name that the model does not have, or a layer unsuitable for the request."""


class LayerNotFoundError(LayerError):
    """The model has no layer of that name."""


def layer_names(model: nn.Module, leaves_only: bool = False) -> dict[str, str]:
    """Readable name -> module path, in forward order. A model without a map gives its module paths
    (with ``leaves_only``, only modules without children: what is worth recording by default)."""
    names = getattr(model, "layer_names", None)
    if isinstance(names, dict) and names:
        return dict(names)
    return {p: p for p, m in model.named_modules() if p and not (leaves_only and any(True for _ in m.children()))}


def module_path(model: nn.Module, name: str) -> str:
    """Module path of a readable name; a module path is accepted as is."""
    names = layer_names(model)
    if name in names:
        return names[name]
    if name in dict(model.named_modules()) and name:
        return name
    sample = ", ".join(list(names)[:12])
    raise LayerNotFoundError(f"The model has no layer named {name!r}; its layers include: {sample}.")


def resolve_layer(model: nn.Module, readable_name: str) -> nn.Module:
    """The module behind a readable name (``conv5``, ``conv5_3``, ``fc8``) or a module path."""
    return model.get_submodule(module_path(model, readable_name))


def readable_name(model: nn.Module, path: str) -> str:
    """Readable name of a module path (the path itself when it has none)."""
    for readable, p in layer_names(model).items():
        if p == path:
            return readable
    return path


def layer_type(model: nn.Module, name: str) -> str:
    """Class name of the layer (``Conv2d``, ``ReLU``, ``MaxPool2d``...)."""
    return type(resolve_layer(model, name)).__name__


def conv_layers(model: nn.Module) -> list[str]:
    """Readable names of the 2-D convolutions, in forward order."""
    return [n for n, p in layer_names(model).items() if isinstance(model.get_submodule(p), nn.Conv2d)]


def deepest_conv(model: nn.Module) -> str:
    """Readable name of the last conv layer's ReLU when one directly follows it (or follows the
    conv's BatchNorm: conv -> bn -> relu), else the conv.

    A model described by a discovery pass (``models.discovery``) carries ``deepest_layer``: its
    last spatial layer before the global pooling (``layer4`` of a ResNet, ``features`` of a DenseNet)."""
    if hasattr(model, "deepest_layer"):
        if model.deepest_layer is None:
            raise LayerNotFoundError(getattr(model, "views_note", "") or "The model has no spatial layer.")
        return str(model.deepest_layer)
    names = list(layer_names(model).items())
    convs = [i for i, (_, p) in enumerate(names) if isinstance(model.get_submodule(p), nn.Conv2d)]
    if not convs:
        raise LayerNotFoundError("The model has no convolution layer.")
    i = convs[-1]
    j = i + 1
    if j < len(names) and isinstance(model.get_submodule(names[j][1]), nn.BatchNorm2d):
        j += 1
    if j < len(names) and isinstance(model.get_submodule(names[j][1]), nn.ReLU):
        return names[j][0]
    return names[i][0]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_table(model: nn.Module, input_size: int | None = None) -> list[tuple[str, str, tuple, int]]:
    """(readable name, type, output shape without batch, own parameter count) per layer, from one
    forward pass of a zero image (in eval mode; the model's mode is restored afterwards)."""
    spec = getattr(model, "default_preprocess", {}) or {}
    n = int(input_size or spec.get("input_size", 224))
    channels = int(spec.get("channels", 3))
    names = layer_names(model)
    shapes: dict[str, tuple] = {}
    hooks = []
    for readable, path in names.items():
        def hook(_m, _i, out, readable=readable):  # noqa: ANN001
            shapes.setdefault(readable, tuple(out.shape[1:]))

        hooks.append(model.get_submodule(path).register_forward_hook(hook))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, n, n, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    for readable, path in names.items():
        m = model.get_submodule(path)
        own = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append((readable, type(m).__name__, shapes.get(readable, ()), own))
    return rows


def describe_model(model: nn.Module, input_size: int | None = None, title: str = "") -> str:
    """A printable table of layers, output shapes and parameter counts, with the total."""
    rows = layer_table(model, input_size)
    lines = [title] if title else []
    lines.append(f"{'layer':<12} {'type':<18} {'output':<18} {'params':>12}")
    for name, typ, shape, n in rows:
        shape_s = "x".join(str(s) for s in shape)
        lines.append(f"{name:<12} {typ:<18} {shape_s:<18} {n:>12,}")
    total = count_parameters(model)
    lines.append(f"total parameters: {total:,} ({total / 1e6:.1f}M)")
    new = getattr(model, "new_layers", [])
    if new:
        lines.append(f"new (trained from scratch) layers: {', '.join(new)}")
    return "\n".join(lines)


def describe(name: str, **kwargs: object) -> str:
    """Build architecture ``name`` with ``kwargs`` and return (and print) its layer table."""
    model = build_model(name, **kwargs)
    opts = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    text = describe_model(model, title=f"{name}({opts})")
    print(text)
    return text
