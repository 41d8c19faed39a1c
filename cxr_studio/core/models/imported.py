"""The common end of every importer (importers.py: torchvision, TorchScript, exported programs;
external.py: timm, TorchXRayVision): the loaded model checked, described and wrapped as a
`LoadedCheckpoint` like our own checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from cxr_studio.core.hashing import file_sha256
from cxr_studio.core.models import fitting
from cxr_studio.core.models.checkpoint import CheckpointError, LoadedCheckpoint
from cxr_studio.core.models.discovery import attach_layers, discover
from cxr_studio.core.models.registry import DEFAULT_CLASS_NAMES


def finish(
    model: nn.Module, path: Path | None, arch: str, spec: Any, *, classes: list[str] | None,
    multi_label: bool | None, provenance: dict[str, Any], notes: list[str] | None = None,
    probe: nn.Module | None = None, default_multi_label: bool = False,
    default_classes: list[str] | None = None, arch_kwargs: dict[str, Any] | None = None,
) -> LoadedCheckpoint:
    """The common end of every importer: weights checked for NaN, layers discovered (on ``probe``,
    a meta-device twin, when given), class names checked against the outputs."""
    source = str(path) if path else arch
    try:
        fitting.check_finite(model.state_dict(), source)
    except fitting.FitError as exc:
        raise CheckpointError(str(exc)) from None
    shape = (int(spec.channels), int(spec.input_size), int(spec.input_size))
    try:
        found = discover(probe if probe is not None else model, shape)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises on this input
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source} cannot run on a {'x'.join(map(str, shape))} input ({msg}).") from None
    attach_layers(model, found)
    outputs = int(found.output_shape[0]) if len(found.output_shape) == 1 else None  # (N, K) class scores
    names = list(classes) if classes else list(default_classes or [])
    if not names and outputs:
        names = list(DEFAULT_CLASS_NAMES) if outputs == 2 else [str(i) for i in range(outputs)]
    if outputs is not None and len(names) != outputs:
        raise CheckpointError(f"{len(names)} class names are given (--classes) but {source} has {outputs} outputs.")
    model.class_names = names
    model.multi_label = bool(default_multi_label if multi_label is None else multi_label)
    model.default_preprocess = spec.to_dict()
    model.new_layers = []
    model.arch = arch
    note = [n for n in [*(notes or []), found.note] if n]
    return LoadedCheckpoint(
        model=model, arch=arch, arch_kwargs=dict(arch_kwargs or {}), class_names=names, spec=spec, provenance=provenance,
        sha256=file_sha256(path) if path else "", path=path or Path(arch.replace(":", "_")),
        format_version=0, warnings=note, multi_label=model.multi_label,
    )
