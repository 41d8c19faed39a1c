"""What one forward pass tells about a model nobody described for us (a torchvision, timm or
TorchXRayVision network, an exported program): its layers in the order the forward pass enters them,
each output shape, the deepest spatial layer, and where each spatial layer's cells sit on the input.

The pass runs on the meta device when the model is there (no memory, no arithmetic), else on a
zero image. Modules the forward pass calls more than once (torchvision's ResNet reuses one ``relu``
per block) are left out of the layer list: a hook on them would mix their calls.

Receptive-field placement: walking the convolutions and poolings in forward order, each spatial
size met maps to (stride, offset) of its cells on the input (``offset + stride * i``), from the
first layer that produced that size. Parallel branches (a residual shortcut) produce the same size
from the same input and agree. A size no conv/pool produced (an ``F.interpolate``, a functional
pool) has no placement: such maps are stretched over the input, with a note.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from cxr_studio.core.models.placement import Placement

_KERNELS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def building_on_meta() -> bool:
    """True inside ``with torch.device("meta")`` (builders then skip allocating)."""
    return torch.empty(0).device.type == "meta"


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                return v
    return None


@dataclass
class Discovery:
    names: list[str]  # module paths entered exactly once, in entry order
    shapes: dict[str, tuple[int, ...]]  # output shape without the batch dim
    reused: list[str]
    deepest: str | None  # last spatial (N, C, h, w) output before the global pooling
    placements: dict[str, Placement | None]
    output_shape: tuple[int, ...]
    token_layers: list[str] = field(default_factory=list)  # (N, tokens, C) outputs after the deepest
    input_shape: tuple[int, int, int] = (3, 224, 224)

    @property
    def note(self) -> str:
        """What the views can and cannot show on this model ('' when every view works)."""
        need = ("the channel grid, strongest channel, Grad-CAM and receptive-field placement need a "
                "spatial (N, C, h, w) layer")
        if self.deepest is None:
            return f"This model has no spatial layer, so only its prediction can be shown: {need}."
        if self.token_layers:
            return (f"Its spatial layers end at {self.deepest} (the patch embedding); the layers after it "
                    f"({self.token_layers[0]} ...) are token sequences: {need}, so they show {self.deepest} "
                    "and earlier layers only.")
        if self.placements.get(self.deepest) is None:
            return (f"Where the cells of {self.deepest} sit on the input cannot be told from this model's "
                    "layers, so its maps are stretched over the whole input.")
        return ""


def _pair(v: Any) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def _aten_calls(mod: nn.Module) -> list[Any]:
    """The ``call_function`` nodes of an unflattened exported module's graph (none for eager modules)."""
    return [n for n in getattr(getattr(mod, "graph", None), "nodes", []) if n.op == "call_function"]


def conv_weight(mod: nn.Module) -> torch.Tensor | None:
    """The 4-D weight of a 2-D convolution: an ``nn.Conv2d``, or an exported program's unflattened
    module whose graph is one aten conv2d call on a weight it holds; else None."""
    if isinstance(mod, nn.Conv2d):
        return mod.weight
    calls = _aten_calls(mod)
    if len(calls) != 1 or not str(calls[0].target).startswith("aten.conv2d") or len(calls[0].args) < 2:
        return None
    w = calls[0].args[1]
    t = getattr(mod, w.target, None) if getattr(w, "op", "") == "get_attr" else None
    return t if isinstance(t, torch.Tensor) and t.dim() == 4 else None


def _kernel(mod: nn.Module) -> tuple[int, int, Any, int] | None:
    """(kernel, stride, padding, dilation) of a conv/pool module, also of an exported program's
    unflattened one (a graph holding one aten conv2d / max_pool2d / avg_pool2d call); else None."""
    if isinstance(mod, _KERNELS):
        k = _pair(mod.kernel_size)
        return k, _pair(mod.stride or k), mod.padding, _pair(getattr(mod, "dilation", 1) or 1)
    calls = _aten_calls(mod)
    if len(calls) != 1:
        return None
    name, args = str(calls[0].target), list(calls[0].args)
    try:
        if name.startswith("aten.conv2d"):
            weight = conv_weight(mod)
            if weight is None:
                return None
            k = int(weight.shape[-1])
            get = lambda i, default: _pair(args[i]) if len(args) > i and args[i] else default  # noqa: E731
            return k, get(3, 1), get(4, 0), get(5, 1)
        if name.startswith(("aten.max_pool2d", "aten.avg_pool2d")):
            k = _pair(args[1])
            stride = _pair(args[2]) if len(args) > 2 and args[2] else k
            pad = _pair(args[3]) if len(args) > 3 and args[3] else 0
            dil = _pair(args[4]) if name.startswith("aten.max_pool2d") and len(args) > 4 and args[4] else 1
            return k, stride, pad, dil
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return None


def _step(kernel: tuple[int, int, Any, int], stride_in: float, offset_in: float) -> tuple[float, float]:
    k, s, pad, d = kernel
    if isinstance(pad, str):
        p = (k - 1) * d / 2.0 if pad == "same" else 0.0
    else:
        p = float(_pair(pad))
    return stride_in * s, offset_in + ((k - 1) * d / 2.0 - p) * stride_in


def discover(model: nn.Module, input_shape: tuple[int, int, int]) -> Discovery:
    """Run ``model`` once on zeros of ``input_shape`` (C, H, W) with hooks on every module."""
    modules = [(p, m) for p, m in model.named_modules() if p]
    calls: collections.Counter[str] = collections.Counter()
    entry: list[str] = []
    events: list[tuple[str, torch.Tensor]] = []
    in_hw: dict[str, tuple[int, int]] = {}

    def pre(path: str):
        def hook(_m: nn.Module, args: Any) -> None:
            calls[path] += 1
            if calls[path] == 1:
                entry.append(path)
                t = _first_tensor(args)
                if t is not None and t.ndim == 4:
                    in_hw[path] = (int(t.shape[-2]), int(t.shape[-1]))
        return hook

    def post(path: str):
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            t = _first_tensor(out)
            if calls[path] == 1 and t is not None:
                events.append((path, t))
        return hook

    p0 = next(iter(model.parameters()), None)
    device = p0.device if p0 is not None else torch.device("cpu")
    handles = []
    flags = [(m, m.training) for m in model.modules()]
    try:
        for path, m in modules:
            handles.append(m.register_forward_pre_hook(pre(path)))
            handles.append(m.register_forward_hook(post(path)))
        model.eval()
        with torch.no_grad():
            out = _first_tensor(model(torch.zeros(1, *input_shape, device=device)))
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    mods = dict(modules)
    reused = [p for p in entry if calls[p] > 1]
    shapes = {p: tuple(int(s) for s in t.shape[1:]) for p, t in events}
    out_hw = {p: (int(t.shape[-2]), int(t.shape[-1])) for p, t in events if t.ndim == 4}

    state: dict[tuple[int, int], tuple[float, float]] = {tuple(input_shape[1:]): (1.0, 0.0)}
    for path in entry:
        m = mods[path]
        if path not in in_hw or path not in out_hw or in_hw[path] not in state:
            continue
        kernel = _kernel(m)
        if kernel is not None:
            state.setdefault(out_hw[path], _step(kernel, *state[in_hw[path]]))
        elif isinstance(m, _ADAPTIVE) and in_hw[path] == out_hw[path]:
            state.setdefault(out_hw[path], state[in_hw[path]])
    placements = {p: (Placement(*state[hw]) if hw in state else None) for p, hw in out_hw.items()}

    def pooled(t: torch.Tensor) -> bool:
        return t.ndim == 4 and tuple(t.shape[-2:]) == (1, 1)

    # the global pooling is the last adaptive pool to 1x1 (squeeze-excitation blocks pool too)
    stop = max((i for i, (p, t) in enumerate(events) if isinstance(mods[p], _ADAPTIVE) and pooled(t)),
               default=len(events))
    deepest, index = None, -1
    for i, (path, t) in enumerate(events[:stop]):
        if path in reused or t.ndim != 4 or pooled(t) or isinstance(mods[path], _ADAPTIVE):
            continue
        deepest, index = path, i
    tokens = [p for p, t in events[index + 1:] if t.ndim == 3 and p not in reused] if deepest else []
    return Discovery(
        names=[p for p in entry if p not in reused],
        shapes=shapes,
        reused=reused,
        deepest=deepest,
        placements=placements,
        output_shape=tuple(out.shape[1:]) if out is not None else (),
        token_layers=tokens,
        input_shape=tuple(int(v) for v in input_shape),
    )


def attach_layers(model: nn.Module, discovery: Discovery) -> nn.Module:
    """Give ``model`` the attributes the views read, from a discovery pass (of it or of its
    meta-device twin): ``layer_names``, ``deepest_layer``, ``layer_placements``, ``views_note``."""
    model.layer_names = {p: p for p in discovery.names}
    model.deepest_layer = discovery.deepest
    model.layer_placements = dict(discovery.placements)
    model.reused_layers = list(discovery.reused)
    model.layer_shapes = {p: discovery.shapes[p] for p in discovery.names if p in discovery.shapes}
    # inputs this model is known to run on -> its number of outputs (spares another pass)
    outputs = int(discovery.output_shape[0]) if len(discovery.output_shape) == 1 else None  # (N, K) scores
    model.runs_at = {tuple(discovery.input_shape): outputs}
    model.views_note = discovery.note
    return model
