"""Checkpoints: plain types only, written atomically, read with ``torch.load(weights_only=True)``.

On-disk format (a dict saved with ``torch.save``)::

    {"format": "cxr-studio-checkpoint", "format_version": 1,
     "arch": "cxrnet", "arch_kwargs": {...}, "class_names": ["normal", "abnormal"],
     "preprocess": PreprocessSpec dict, "state_dict": {name: tensor},
     "provenance": {"recipe", "seed", "data_manifest_hash", "metrics", "versions", "created", ...},
     "training_state": {...}  # optional: optimizer / scheduler / epoch; export_release strips it}

Every value is a str, int, float, bool, None, list/tuple, dict or tensor, so the safe loader reads
it and nothing in a checkpoint can run code. A bare torchvision state dict (``torch.save(
model.state_dict())``) also loads when the caller names the architecture.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cxr_studio.core.models.checkpoint_io import (  # noqa: F401  (CheckpointError, code_archive_kind: re-exported)
    CheckpointError, code_archive_kind, read_raw, to_plain, torch_save_atomic,
)
from cxr_studio.core.hashing import file_sha256
from cxr_studio.core.models.args import PRESETS  # noqa: F401  ("paper", "torchvision", "xrv"; re-exported)
from cxr_studio.core.models import architectures, build_model, fitting, model_meta
from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.versions import versions
from cxr_studio.core.models.torchvision_any import first_conv_channels

FORMAT = "cxr-studio-checkpoint"
FORMAT_VERSION = 1
PROVENANCE_KEYS = ("recipe", "seed", "data_manifest_hash", "metrics", "versions", "created")


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, with everything stored next to its weights."""

    model: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    class_names: list[str]
    spec: PreprocessSpec
    provenance: dict[str, Any]
    sha256: str
    path: Path
    training_state: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = False  # sigmoid outputs (one probability per class), else softmax

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def name(self) -> str:
        return self.path.stem


# -- writing ----------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DataParallel / DistributedDataParallel / torch.compile wrapper."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
    preprocess: PreprocessSpec | dict | None = None,
    provenance: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically (the old file survives a failure).

    ``arch`` / ``arch_kwargs`` / ``class_names`` / ``preprocess`` default to what ``build_model``
    attached to the model. ``provenance`` gets ``versions`` and ``created`` filled in when absent.
    Returns the path written.
    """
    path = Path(path)
    model = unwrap(model)
    arch = arch or getattr(model, "arch", None)
    if not arch:
        raise CheckpointError(f"Cannot save {path}: name the architecture (arch=...) of the model.")
    try:
        model_meta(arch)
    except ValueError as exc:
        raise CheckpointError(f"Cannot save {path}: {exc}") from None
    if arch_kwargs is None:
        arch_kwargs = getattr(model, "arch_kwargs", {})
    class_names = list(class_names if class_names is not None else getattr(model, "class_names", []))
    outputs = _output_count(model)
    if outputs is not None and class_names and len(class_names) != outputs:
        raise CheckpointError(
            f"Cannot save {path}: {len(class_names)} class names given for a model with {outputs} outputs."
        )
    if preprocess is None:
        preprocess = getattr(model, "default_preprocess", None) or PreprocessSpec().to_dict()
    spec = preprocess if isinstance(preprocess, PreprocessSpec) else PreprocessSpec.from_dict(dict(preprocess))
    prov = {k: None for k in PROVENANCE_KEYS}
    prov.update(provenance or {})
    prov["versions"] = prov.get("versions") or versions()
    prov["created"] = prov.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": str(arch),
        "arch_kwargs": to_plain(dict(arch_kwargs), "arch_kwargs"),
        "class_names": [str(c) for c in class_names],
        "preprocess": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": to_plain(prov, "provenance"),
    }
    if getattr(model, "multi_label", False):
        payload["multi_label"] = True
    if training_state is not None:
        payload["training_state"] = to_plain(dict(training_state), "training_state")
    torch_save_atomic(payload, path)
    return path


# -- reading ----------------------------------------------------------------------------------------


def _new_layer_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "layer_names", {})
    return tuple(f"{names.get(n, n)}." for n in getattr(model, "new_layers", []))


def _interpret(
    obj: dict[str, Any], path: Path, arch: str | None, arch_kwargs: dict[str, Any] | None
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], int, bool]:
    """(arch, kwargs, state dict, format version (0: bare), bare?) of a raw checkpoint dict."""
    if obj.get("format") != FORMAT:
        bare = fitting.unwrap_state_dict(obj)
        if bare is None:
            raise CheckpointError(f"{path} is not a CXR Studio checkpoint or a state dict of tensors.")
        if arch is None:
            raise CheckpointError(
                f"{path} is a bare state dict (weights without an architecture); "
                "name the architecture (arch=..., --arch resnet50) to load it."
            )
        return arch, dict(arch_kwargs or {}), bare, 0, True
    version = obj.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format version {version!r}.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format version {version}, newer than this CXR Studio reads "
            f"(up to {FORMAT_VERSION}); update CXR Studio to load it."
        )
    missing_keys = [k for k in ("arch", "state_dict") if k not in obj]
    if missing_keys:
        raise CheckpointError(f"{path} is damaged: it lacks {', '.join(missing_keys)}.")
    for key, typ in (("arch_kwargs", dict), ("class_names", list), ("provenance", dict)):
        if obj.get(key) is not None and not isinstance(obj[key], typ):
            raise CheckpointError(f"{path} is damaged: its {key} is a {type(obj[key]).__name__}, not a {typ.__name__}.")
    state = obj["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is damaged: its state_dict is not a dict of tensors.")
    stored_arch = str(obj["arch"])
    if arch is not None and arch != stored_arch:
        raise CheckpointError(f"{path} holds a {stored_arch} model, not {arch}.")
    kwargs = {**(obj.get("arch_kwargs") or {}), **(arch_kwargs or {})}
    return stored_arch, kwargs, state, version, False


def _known(path: Path, arch: str, bare: bool = False) -> None:
    try:
        model_meta(arch)
    except ValueError:
        known = f"known: {', '.join(architectures())}, or any torchvision classification model"
        if bare:
            raise CheckpointError(f"Unknown architecture {arch!r} for the state dict {path} ({known}).") from None
        raise CheckpointError(
            f"{path} uses the architecture {arch!r}, which this CXR Studio does not know ({known})."
        ) from None


def _rebuild(
    path: Path, arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor], bare: bool
) -> tuple[nn.Module, list[str], nn.Module]:
    """(model, warnings, its meta-device twin): ``arch`` checked against ``state`` on the meta
    device first (nothing is allocated for weights that do not fit), then built and loaded: strictly
    for a checkpoint; for a bare state dict a new head that does not fit keeps its random init."""
    _known(path, arch)
    try:
        fitting.check_finite(state, str(path))
        meta = fitting.meta_build(arch, kwargs, str(path))
        if not bare:
            fitting.check_strict_fit(str(path), arch, kwargs, meta, state)
    except fitting.FitError as exc:
        raise CheckpointError(str(exc)) from None
    missing, unexpected, shapes = fitting.misfit(fitting.shapes_of(meta), state)
    head_shapes: list[str] = []
    head_missing: list[str] = []
    if bare:
        new = _new_layer_prefixes(meta)
        head_shapes = [s for s in shapes if new and s.startswith(new)]
        head_missing = [k for k in missing if new and k.startswith(new)]
        others = ([k for k in missing if k not in head_missing], unexpected, [s for s in shapes if s not in head_shapes])
        if any(others):
            raise CheckpointError(
                f"The state dict in {path} does not fit {arch}: {fitting.describe_misfit(*others)}.")
    fast = None if head_shapes or head_missing else fitting.materialise(arch, kwargs, state)
    if fast is not None:  # the file's tensors themselves: no random init, no copy
        fast.arch_kwargs = dict(kwargs)
        return fast, [], meta
    try:
        model = build_model(arch, **fitting.rebuild_kwargs(arch, kwargs))
    except ValueError as exc:
        raise CheckpointError(f"Cannot rebuild the {arch} model of {path}: {exc}") from None
    model.arch_kwargs = dict(kwargs)
    if not bare:
        model.load_state_dict(state, strict=True)
        return model, [], meta
    skip = {s.split(" ")[0] for s in head_shapes}
    model.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=False)
    warnings = [f"not loaded, keeps its random init: {s}" for s in head_shapes]
    warnings += [f"not in the file, keeps its random init: {k}" for k in head_missing]
    return model, warnings, meta


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    *,
    classes: list[str] | None = None,
    input_size: int | None = None,
    preset: str | None = None,
    multi_label: bool | None = None,
) -> LoadedCheckpoint:
    """Rebuild the model stored in ``path`` (eval mode, on ``device``).

    ``arch`` / ``arch_kwargs`` are needed for a bare state dict: a registered architecture or any
    torchvision classifier (``resnet50``, ``densenet121``...); its number of outputs is read from
    the state dict's head unless ``arch_kwargs`` give ``num_classes`` (a head that then does not
    fit keeps its random init, reported in ``.warnings``). For a CXR Studio checkpoint
    ``arch_kwargs`` override the stored ones and ``arch`` must match. ``classes``, ``input_size``,
    ``preset`` and ``multi_label`` override what the file (or the architecture) says.
    Weights are checked on the meta device before anything is allocated, for finiteness, and the
    preprocessing's input against the model (a stored size that does not fit is corrected with a
    warning; one given here is refused).
    """
    path = Path(path)
    obj = read_raw(path)
    arch, kwargs, state, version, bare = _interpret(obj, path, arch, arch_kwargs)
    if bare:
        _known(path, arch, bare=True)
        kwargs = fitting.infer_outputs(arch, kwargs, state)
    model, warnings, meta = _rebuild(path, arch, kwargs, state, bare)
    try:
        spec = PreprocessSpec.from_dict(dict(obj.get("preprocess") or model.default_preprocess))
        if preset is not None:
            spec = preset_spec(preset, model)
        if input_size is not None:
            spec = spec.replace(input_size=int(input_size))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has an invalid preprocessing spec: {exc}") from None
    try:
        spec, spec_warnings, outputs = fitting.check_input(str(path), arch, meta, spec, user_size=input_size is not None)
    except fitting.FitError as exc:
        raise CheckpointError(str(exc)) from None
    warnings += spec_warnings
    outputs = outputs if outputs is not None else _output_count(model)
    class_names = list(classes) if classes else list(obj.get("class_names") or getattr(model, "class_names", []))
    if outputs is not None and class_names and len(class_names) != outputs:
        if classes:
            raise CheckpointError(
                f"{len(class_names)} class names are given (--classes) but the model of {path} has {outputs} outputs.")
        raise CheckpointError(
            f"{path} names {len(class_names)} classes ({', '.join(map(str, class_names))}) "
            f"but its model has {outputs} outputs."
        )
    model.class_names = class_names
    model.multi_label = bool(obj.get("multi_label", False) if multi_label is None else multi_label)
    model.default_preprocess = spec.to_dict()  # the input it is used with (activation maximisation, layer table)
    model.eval()
    try:
        model.to(torch.device(device))
    except Exception as exc:  # noqa: BLE001 - out of memory is re-raised for the caller to explain
        if "out of memory" in str(exc).lower():
            raise
        raise CheckpointError(f"Cannot put the model of {path} on device {device!r}: {exc}") from None
    provenance = dict(obj.get("provenance") or {})
    if bare:
        provenance.setdefault("imported_from", f"{path.name} (a bare {arch} state dict)")
    return LoadedCheckpoint(
        model=model,
        arch=arch,
        arch_kwargs=kwargs,
        class_names=class_names,
        spec=spec,
        provenance=provenance,
        sha256=file_sha256(path),
        path=path,
        training_state=obj.get("training_state"),
        format_version=version,
        warnings=warnings,
        multi_label=model.multi_label,
    )


def preset_spec(name: str, model: nn.Module | None = None) -> PreprocessSpec:
    """A named preprocessing (``paper``, ``torchvision``, ``xrv``) with the model's input channels."""
    if name == "xrv":  # TorchXRayVision: whole image, 224, one channel scaled to [-1024, 1024]
        spec = PreprocessSpec(segmentation="none", crop=False, clahe=False, input_size=224, channels=1,
                              normalization="xrv")
    else:
        spec = PreprocessSpec.preset(name)
    if model is not None and name != "xrv":
        spec = spec.replace(channels=first_conv_channels(model))
    return spec


def _output_count(model: nn.Module) -> int | None:
    """Outputs of the model's last layer when it is a fully connected one, else None."""
    names = getattr(model, "layer_names", None)
    if not names:
        return None
    last = model.get_submodule(list(names.values())[-1])
    return int(last.out_features) if isinstance(last, nn.Linear) else None


def peek_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Everything a checkpoint stores except the tensors (for listing files without building models)."""
    obj = read_raw(path)
    if obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CXR Studio checkpoint.")
    out = {k: v for k, v in obj.items() if k not in ("state_dict", "training_state")}
    out["has_training_state"] = "training_state" in obj
    out["sha256"] = file_sha256(path)
    return out


def export_release(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy checkpoint ``src`` to ``dst`` without its training state (after checking it loads)."""
    src, dst = Path(src), Path(dst)
    obj = read_raw(src)
    if obj.get("format") != FORMAT:
        raise CheckpointError(f"{src} is not a CXR Studio checkpoint, so it cannot be released.")
    arch, kwargs, state, _, _ = _interpret(obj, src, None, None)
    _rebuild(src, arch, kwargs, state, bare=False)  # the release must load
    obj.pop("training_state", None)
    obj["provenance"] = {**(obj.get("provenance") or {}), "released_from_sha256": file_sha256(src)}
    torch_save_atomic(obj, dst)
    return dst
