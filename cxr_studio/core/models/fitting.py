"""Checks made before a checkpoint's weights are allocated: do they fit the architecture it names,
are they finite, can its preprocessing feed the model.

Everything here runs on the meta device (shapes only, no memory): a checkpoint whose metadata asks
for a 100 GB model is refused in one sentence instead of being allocated, and a preprocessing input
size the model cannot take is found before the first image fails.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn as nn

from cxr_studio.core.models.meta_init import no_init
from cxr_studio.core.models.registry import build_model, model_meta
from cxr_studio.core.models.torchvision_any import infer_aux_logits, infer_num_classes, is_torchvision_classifier

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "module")
PREFIXES = ("module.", "_orig_mod.")


class FitError(ValueError):
    """The weights, the architecture and the preprocessing of a model do not agree."""


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The tensors of a bare state dict, of ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers
    (a training script's checkpoint with an optimizer beside it), without ``module.`` (DataParallel)
    or ``_orig_mod.`` (torch.compile) prefixes; None when ``obj`` holds none."""
    if isinstance(obj, dict) and "format" not in obj:
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None
    state = dict(obj)
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _finite(v: torch.Tensor) -> bool:
    # one summing pass (no mask allocated); only a non-finite sum needs the exact check
    return bool(torch.isfinite(v.sum())) or bool(torch.isfinite(v).all())


def nonfinite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and v.numel() and not _finite(v)]


def materialise(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module | None:
    """``arch`` built on the meta device and given ``state``'s tensors themselves (no random init,
    no copy); None when that cannot be done exactly (a tensor the state dict does not hold)."""
    with torch.device("meta"), no_init():
        model = build_model(arch, **rebuild_kwargs(arch, kwargs))
    own = model.state_dict()
    if set(own) != set(state):
        return None
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        return None
    return model


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    bad = nonfinite(state)
    if bad:
        floats = sum(1 for v in state.values() if v.is_floating_point())
        raise FitError(
            f"{source} holds non-finite weights (NaN or infinity) in {len(bad)} of {floats} tensors, "
            f"starting with {bad[0]}: the run that saved them diverged, so the model cannot predict anything."
        )


def rebuild_kwargs(arch: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    info = model_meta(arch)
    return {**kwargs, **{k: v for k, v in info.rebuild_overrides.items() if k in info.parameters}}


def meta_build(arch: str, kwargs: dict[str, Any], source: str = "") -> nn.Module:
    """``arch`` built on the meta device (no memory); ``FitError`` when its options are invalid."""
    try:
        with torch.device("meta"), no_init():
            return build_model(arch, **rebuild_kwargs(arch, kwargs))
    except (ValueError, TypeError) as exc:
        where = f"The model {source} describes, " if source else ""
        raise FitError(f"{where}{arch}({kwargs_text(kwargs)}), cannot be built: {exc}") from None


def kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def output_key(model: nn.Module) -> str | None:
    """State-dict key of the weight of the model's last layer (its classification head)."""
    names = getattr(model, "layer_names", None) or {}
    for path in reversed(list(names.values())):
        m = model.get_submodule(path)
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return f"{path}.weight"
    return None


def infer_outputs(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``kwargs`` with ``num_classes`` read from the state dict's head when the architecture takes
    it and the caller did not give it (a 14-class DenseNet loads as one)."""
    params = model_meta(arch).parameters
    if "num_classes" not in params or "num_classes" in kwargs:
        return kwargs
    out = dict(kwargs)
    if is_torchvision_classifier(arch) and arch not in ("alexnet", "vgg16", "vgg19"):
        n = infer_num_classes(arch, state)
        if "aux_logits" in params:
            out["aux_logits"] = infer_aux_logits(arch, state)
    else:
        key = output_key(meta_build(arch, kwargs))
        t = state.get(key) if key else None
        n = int(t.shape[0]) if isinstance(t, torch.Tensor) and t.ndim >= 2 else None
    if n is not None:
        out["num_classes"] = n
    return out


def misfit(own: dict[str, tuple], state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key (file shape) in file vs (model shape)')."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in file vs {tuple(own[k])}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k])]
    return missing, unexpected, shapes


def describe_misfit(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def size_text(n_params: int) -> str:
    gb = n_params * 4 / 1e9
    return f"{n_params:,} parameters ({gb:.1f} GB)" if gb >= 0.1 else f"{n_params:,} parameters"


def shapes_of(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_strict_fit(source: str, arch: str, kwargs: dict[str, Any], meta: nn.Module,
                     state: dict[str, torch.Tensor]) -> None:
    """Refuse (before anything is allocated) weights that do not fit ``arch(kwargs)`` exactly."""
    own = shapes_of(meta)
    report = misfit(own, state)
    if not any(report):
        return
    wanted = sum(int(torch.Size(s).numel()) for s in own.values())
    held = sum(int(v.numel()) for v in state.values())
    size = ""
    if wanted > 2 * held:
        size = f"the architecture it names would need {size_text(wanted)} but the file holds {held:,}; "
    raise FitError(
        f"The weights in {source} do not fit {arch}({kwargs_text(kwargs)}): {size}{describe_misfit(*report)}."
    )


def _runs(meta: nn.Module, channels: int, size: int) -> tuple[bool, int | None, str]:
    """Whether the meta model runs on a (1, channels, size, size) input; its output count; the error."""
    known = getattr(meta, "runs_at", None)
    if isinstance(known, dict) and (channels, size, size) in known:
        return True, known[(channels, size, size)], ""
    try:
        with torch.no_grad():
            out = meta.eval()(torch.empty(1, channels, size, size, device="meta"))
    except NotImplementedError:  # an op without a meta kernel: cannot tell, assume it runs
        return True, None, ""
    except (RuntimeError, ValueError, IndexError) as exc:
        return False, None, str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    out = out[0] if isinstance(out, (tuple, list)) else out
    n = int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else None  # (N, K) scores only
    return True, n, ""


def check_input(source: str, arch: str, meta: nn.Module, spec: Any, user_size: bool = False) -> tuple[Any, list[str], int | None]:
    """(spec, warnings, output count): the preprocessing checked against the model on the meta
    device. A stored input size the model cannot take is replaced by the architecture's own, with
    a warning; a size the user asked for (``user_size``) that does not fit is refused."""
    ok, n, err = _runs(meta, int(spec.channels), int(spec.input_size))
    if ok:
        return spec, [], n
    own = getattr(meta, "default_preprocess", None) or {}
    size, channels = int(own.get("input_size", spec.input_size)), int(own.get("channels", spec.channels))
    if (size, channels) != (int(spec.input_size), int(spec.channels)) and not user_size:
        ok2, n2, _ = _runs(meta, channels, size)
        if ok2:
            fixed = spec.replace(input_size=size, channels=channels)
            return fixed, [
                f"the preprocessing of {source} feeds {spec.channels}x{spec.input_size}x{spec.input_size} images, "
                f"which {arch} cannot take ({err}); using its own {channels}x{size}x{size} instead"], n2
    what = "--input-size" if user_size else "its preprocessing"
    raise FitError(
        f"{source}: {arch} cannot take the {spec.channels}x{spec.input_size}x{spec.input_size} input "
        f"{what} gives ({err})."
    )
