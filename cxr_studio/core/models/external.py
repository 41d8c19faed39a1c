"""Models from optional packages: ``timm:NAME`` (``pip install cxr-studio[timm]``) and
TorchXRayVision ``xrv:NAME`` (``pip install cxr-studio[xrv]``).

- ``timm:resnet50`` with a state dict: the timm model, its number of outputs and input channels
  read from the state dict's head and first convolution, weights checked on the meta device first.
- ``xrv:densenet121-res224-all`` (or any published weight name) without a file: the package's own
  weights from its cache (``~/.torchxrayvision``; downloaded by the package when missing and online),
  loaded with ``weights_only=True`` (xrv_weights.py), not by the package's own unpickling load.
  ``xrv:densenet121`` / ``xrv:resnet50`` with a file: a state dict for that architecture.
  Their preprocessing (224 px, one channel, [-1024, 1024]) is applied, and they are multi-label
  (one sigmoid probability per pathology).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cxr_studio.core.models.checkpoint import CheckpointError, LoadedCheckpoint, preset_spec, read_raw
from cxr_studio.core.models import fitting
from cxr_studio.core.models.imported import finish
from cxr_studio.core.models.xrv_weights import UnsafeWeightsError, layers_only


def _package(name: str, extra: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CheckpointError(
            f"Opening {extra}: models needs the {name} package: pip install 'cxr-studio[{extra}]'."
        ) from None


def _state(path: Any) -> dict[str, torch.Tensor]:
    if path is None:
        raise CheckpointError("Name the weights file (--checkpoint FILE) for this architecture.")
    state = fitting.unwrap_state_dict(read_raw(path))
    if state is None:
        raise CheckpointError(f"{path} does not hold a state dict (a dict of tensors).")
    try:
        fitting.check_finite(state, str(path))
    except fitting.FitError as exc:
        raise CheckpointError(str(exc)) from None
    return state


def _load_into(meta: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> nn.Module:
    report = fitting.misfit(fitting.shapes_of(meta), state)
    if any(report):
        raise CheckpointError(f"The weights in {source} do not fit {arch}: {fitting.describe_misfit(*report)}.")
    meta.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                         strict=True, assign=True)
    return meta


def _timm(path: Any, name: str, opts: dict[str, Any]) -> LoadedCheckpoint:
    timm = _package("timm", "timm")
    state = _state(path)
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False)
    except Exception as exc:  # noqa: BLE001 - unknown name (RuntimeError) or bad options
        raise CheckpointError(f"timm cannot build {name!r}: {str(exc).strip()[:160]}") from None
    cfg = dict(getattr(probe, "pretrained_cfg", None) or getattr(probe, "default_cfg", {}) or {})
    head, first = cfg.get("classifier"), cfg.get("first_conv")
    head = head[0] if isinstance(head, (list, tuple)) else head
    kw: dict[str, Any] = {}
    if head and f"{head}.weight" in state:
        kw["num_classes"] = int(state[f"{head}.weight"].shape[0])
    if first and f"{first}.weight" in state:
        kw["in_chans"] = int(state[f"{first}.weight"].shape[1])
    with torch.device("meta"):
        meta = timm.create_model(name, pretrained=False, **kw)
    model = _load_into(meta, state, str(path), f"timm:{name}")
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    spec = preset_spec(opts.get("preset") or "torchvision").replace(channels=kw.get("in_chans", 3))
    if tuple(cfg.get("mean") or ()) == (0.5, 0.5, 0.5) and not opts.get("preset"):
        spec = spec.replace(normalization="center")
    spec = spec.replace(input_size=int(opts.get("input_size") or (spec.input_size if opts.get("preset") else size)))
    prov = {"imported_from": f"{Path(path).name} (timm {name} state dict)"}
    with torch.device("meta"):
        twin = timm.create_model(name, pretrained=False, **kw)
    return finish(model, Path(path), f"timm:{name}", spec, classes=opts.get("classes"),
                  multi_label=opts.get("multi_label"), provenance=prov, probe=twin, arch_kwargs=kw)


def _xrv(path: Any, name: str, opts: dict[str, Any]) -> LoadedCheckpoint:
    xrv = _package("torchxrayvision", "xrv")
    if path is None:  # published weights from the package's cache
        try:
            with layers_only(xrv.models):  # its own torch.load would unpickle whole models
                model = xrv.models.get_model(name)
        except UnsafeWeightsError as exc:
            raise CheckpointError(f"TorchXRayVision's cached weights {name!r} are refused: {exc}.") from None
        except Exception as exc:  # noqa: BLE001 - unknown name, or not cached and offline
            raise CheckpointError(f"TorchXRayVision cannot provide the weights {name!r}: {str(exc).strip()[:200]}") from None
        prov = {"imported_from": f"TorchXRayVision weights {name}"}
    else:
        families = {"densenet121": lambda: xrv.models.DenseNet(weights=None),
                    "resnet50": lambda: xrv.models.ResNet(weights=None)}
        if name not in families:
            raise CheckpointError(f"xrv:{name} with a file needs an architecture: xrv:densenet121 or xrv:resnet50.")
        model = families[name]()
        state = _state(path)
        if isinstance(state.get("op_threshs"), torch.Tensor) and getattr(model, "op_threshs", None) is None:
            model.op_threshs = state["op_threshs"]  # the calibration of published weights, kept with them
        report = fitting.misfit(fitting.shapes_of(model), state)
        if any(report):
            raise CheckpointError(f"The weights in {path} do not fit xrv:{name}: {fitting.describe_misfit(*report)}.")
        model.load_state_dict(state, strict=True)
        prov = {"imported_from": f"{Path(path).name} (TorchXRayVision {name} state dict)"}
    model.eval()
    # the package applies its calibration (op_threshs + sigmoid) inside forward: outputs are already
    # probabilities, so CXR Studio must not apply another sigmoid; Grad-CAM explains these outputs
    calibrated = getattr(model, "op_threshs", None) is not None or bool(getattr(model, "apply_sigmoid", False))
    if calibrated:
        model.forward = _Probabilities(model.forward)  # logits for the sigmoid CXR Studio applies
    spec = preset_spec(opts.get("preset") or "xrv")
    if opts.get("input_size"):
        spec = spec.replace(input_size=int(opts["input_size"]))
    labels = getattr(model, "pathologies", None) or getattr(model, "targets", None) or []
    classes = [str(p) if p else f"(unused {i})" for i, p in enumerate(labels)]
    return finish(model, Path(path) if path else None, f"xrv:{name}", spec, classes=opts.get("classes"),
                  multi_label=opts.get("multi_label"), provenance=prov, default_multi_label=True,
                  default_classes=classes or None)


class _Probabilities:
    """A calibrated forward turned back into logits (``log(p / (1 - p))``), so that the sigmoid of
    a multi-label model gives the package's own probabilities again."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        p = self.forward(*args, **kwargs).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)


def open_external(path: Any, arch: str, **opts: Any) -> LoadedCheckpoint:
    """``timm:NAME`` or ``xrv:NAME`` (see the module docstring)."""
    kind, _, name = arch.partition(":")
    if kind == "timm":
        return _timm(path, name, opts)
    if kind == "xrv":
        return _xrv(path, name, opts)
    raise CheckpointError(f"Unknown model source {kind!r} in --arch {arch}; use timm:NAME or xrv:NAME.")
