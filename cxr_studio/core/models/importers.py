"""Open the models researchers already have: one contract, a file plus an architecture name.

``open_model(path, arch=None, classes=None, input_size=None, preset=None, multi_label=None)``:

- a CXR Studio checkpoint, or a state dict (plain, ``{"state_dict": ...}`` / ``{"model": ...}``,
  ``module.`` prefixes) with ``arch`` = a registered architecture or any torchvision classifier;
- a **TorchScript** file (found by its content, no ``arch`` needed): rebuilt as the torchvision
  model it was traced from when one fits exactly and gives the same outputs (then every layer can be
  observed), else run as it is, for its prediction only;
- a **torch.export** program (``.pt2``): unflattened so its layers can be hooked;
- ``arch="timm:NAME"`` (``pip install cxr-studio[timm]``) and ``arch="xrv:NAME"`` (TorchXRayVision,
  ``pip install cxr-studio[xrv]``): see ``external``.

TorchScript and exported programs carry code or a graph that runs when loaded: they are opened only
here, when the user names the file, never by ``load_checkpoint`` or a folder scan.
The same command-line flags everywhere come from :func:`add_model_arguments` / :func:`model_options`.
"""
from __future__ import annotations

import os
import warnings as _warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cxr_studio.core.models.checkpoint import (
    FORMAT,
    CheckpointError,
    LoadedCheckpoint,
    code_archive_kind,
    load_checkpoint,
    preset_spec,
    read_raw,
    save_checkpoint,
)
from cxr_studio.core.models.args import add_model_arguments, model_options  # noqa: F401  (the shared flags, re-exported)
from cxr_studio.core.models import fitting
from cxr_studio.core.models.external import open_external
from cxr_studio.core.models.imported import finish
from cxr_studio.core.models.registry import architectures, build_model, model_meta
from cxr_studio.core.models.torchvision_any import _meta_model, infer_num_classes, torchvision_classifiers


# -- opening -------------------------------------------------------------------------------------
def open_model(
    path: str | os.PathLike | None,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    input_size: int | None = None,
    preset: str | None = None,
    multi_label: bool | None = None,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Any model file the user names, as a `LoadedCheckpoint` (eval mode, on ``device``); every
    problem is a `CheckpointError` with one sentence."""
    opts = dict(classes=classes, input_size=input_size, preset=preset, multi_label=multi_label)
    if arch and ":" in arch:
        return _to(open_external(path, arch, **opts), device)
    if path is None:
        raise CheckpointError("Name a model file (--checkpoint FILE); only xrv:NAME weights need none.")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}" if not path.exists() else f"{path} is not a file.")
    kind = code_archive_kind(path)
    if kind == "TorchScript":
        return _to(_torchscript(path, arch, **opts), device)
    if kind == "exported program":
        return _to(_exported(path, **opts), device)
    return load_checkpoint(path, device, arch, arch_kwargs, **opts)


def needs_architecture(path: str | os.PathLike) -> bool:
    """True for a file that opens only with an architecture name: not our checkpoint, not TorchScript,
    not an exported program (a bare or wrapped state dict). Unreadable files answer False: opening
    them gives the one-sentence error."""
    p = Path(path)
    try:
        if code_archive_kind(p) is not None:
            return False
        return read_raw(p).get("format") != FORMAT
    except (CheckpointError, OSError):
        return False


def architecture_names() -> list[str]:
    """What an architecture name can be: our registered ones, then torchvision's classifiers."""
    ours = architectures()
    return ours + [n for n in torchvision_classifiers() if n not in ours]


def _to(loaded: LoadedCheckpoint, device: str | torch.device) -> LoadedCheckpoint:
    loaded.model.eval()
    try:
        loaded.model.to(torch.device(device))
    except Exception as exc:  # noqa: BLE001
        if "out of memory" in str(exc).lower():
            raise
        raise CheckpointError(f"Cannot put the model of {loaded.path} on device {device!r}: {exc}") from None
    return loaded


def _spec(preset: str | None, input_size: int | None, channels: int, default_size: int) -> Any:
    spec = preset_spec(preset or "torchvision")
    if preset != "xrv":
        spec = spec.replace(channels=channels)
    return spec.replace(input_size=int(input_size or (spec.input_size if preset else default_size)))


# -- TorchScript -----------------------------------------------------------------------------------
class ScriptProgram(nn.Module):
    """A TorchScript program run as it is: its layers cannot be hooked, so only its output is seen."""

    def __init__(self, program: torch.jit.ScriptModule) -> None:
        super().__init__()
        object.__setattr__(self, "program", program)  # not a submodule: nothing tries to hook it

    def forward(self, x: torch.Tensor) -> Any:
        return self.program(x)

    def _apply(self, fn: Any, recurse: bool = True) -> "ScriptProgram":
        self.program._apply(fn)
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.program.state_dict(*args, **kwargs)

    def parameters(self, recurse: bool = True) -> Any:
        return self.program.parameters(recurse)


def _first_conv_in(state: dict[str, torch.Tensor]) -> int:
    for v in state.values():
        if v.ndim == 4:
            return int(v.shape[1])
    return 3


def _rebuild_traced(ts: torch.jit.ScriptModule, state: dict[str, torch.Tensor], spec: Any) -> tuple[nn.Module, str, nn.Module] | None:
    """(eager model, torchvision name, meta twin) of the torchvision classifier ``ts`` was traced
    or scripted from, when one fits its weights exactly and gives the same outputs; else None."""
    original = getattr(ts, "original_name", "")
    for name in torchvision_classifiers():
        try:
            if type(_meta_model(name)).__name__ != original:
                continue
            n = infer_num_classes(name, state)
            if n is None:
                continue
            meta = _meta_model(name, n)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        if any(fitting.misfit(fitting.shapes_of(meta), state)):
            continue
        model = build_model(name, num_classes=n, weights="empty")
        model.load_state_dict(state, strict=True)
        model.eval()
        x = torch.rand(1, int(spec.channels), int(spec.input_size), int(spec.input_size), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            try:
                a, b = model(x), ts(x)
            except Exception:  # noqa: BLE001 - the program does not run at this size: not ours to judge
                return None
        b = b[0] if isinstance(b, (tuple, list)) else b
        if isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4):
            return model, name, meta
    return None


def _torchscript(path: Path, arch: str | None, *, classes, input_size, preset, multi_label) -> LoadedCheckpoint:
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            ts = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged archive or unknown ops
        raise CheckpointError(f"{path} looks like TorchScript but cannot be loaded ({str(exc).strip()[:160]}).") from None
    ts.eval()
    state = {k: v for k, v in ts.state_dict().items() if isinstance(v, torch.Tensor)}
    try:
        fitting.check_finite(state, str(path))
    except fitting.FitError as exc:
        raise CheckpointError(str(exc)) from None
    spec = _spec(preset, input_size, _first_conv_in(state), 224)
    prov = {"imported_from": f"{path.name} (TorchScript)"}
    rebuilt = _rebuild_traced(ts, state, spec)
    if rebuilt is not None:
        model, name, meta = rebuilt
        prov["imported_from"] = f"{path.name} (TorchScript, rebuilt as torchvision {name})"
        note = (f"TorchScript file rebuilt as torchvision {name} (same weights, same outputs on a test input), "
                "so its layers can be observed.")
        return finish(model, path, name, spec, classes=classes, multi_label=multi_label, provenance=prov,
                      notes=[note], probe=meta, arch_kwargs=dict(model.arch_kwargs))
    note = (f"{path.name} is a TorchScript program that CXR Studio cannot rebuild as a known architecture, "
            "and TorchScript layers cannot be hooked: only its prediction can be shown.")
    return finish(ScriptProgram(ts), path, "torchscript", spec, classes=classes, multi_label=multi_label,
                  provenance=prov, notes=[note])


# -- torch.export programs --------------------------------------------------------------------------
def _exported_input(ep: Any) -> tuple[int, ...] | None:
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in set(ep.graph_signature.user_inputs):
            val = node.meta.get("val")
            try:
                return tuple(int(s) for s in val.shape[1:])
            except (AttributeError, TypeError, ValueError):  # dynamic shape
                return None
    return None


def _exported(path: Path, *, classes, input_size, preset, multi_label) -> LoadedCheckpoint:
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ep = torch.export.load(str(path))
            model = torch.export.unflatten(ep)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} looks like an exported program but cannot be loaded ({str(exc).strip()[:160]}).") from None
    shape = _exported_input(ep)
    if shape is not None and (len(shape) != 3 or shape[1] != shape[2]):
        raise CheckpointError(f"{path} takes inputs of shape {shape}; CXR Studio feeds square (C, N, N) images.")
    if shape is not None and input_size is not None and int(input_size) != shape[1]:
        raise CheckpointError(f"{path} was exported for {shape[1]}x{shape[2]} inputs only, not --input-size {input_size}.")
    channels, size = (shape[0], shape[1]) if shape else (3, 224)
    spec = _spec(preset, input_size or size, channels, size)
    prov = {"imported_from": f"{path.name} (torch.export program)"}
    return finish(model, path, "exported", spec, classes=classes, multi_label=multi_label, provenance=prov)


def release_imported(src: str | os.PathLike | None, dst: str | os.PathLike, **options: Any) -> Path:
    """Open ``src`` as :func:`open_model` does and write it as a self-describing CXR Studio
    checkpoint (architecture, class names, preprocessing, provenance "imported from ...")."""
    loaded = open_model(src, **options)
    try:
        model_meta(loaded.arch)
    except ValueError:
        raise CheckpointError(
            f"{src} is a {loaded.arch} program, not weights of a known architecture, so it cannot be "
            "stored as a CXR Studio checkpoint; open it directly instead."
        ) from None
    prov = {**loaded.provenance, "imported_sha256": loaded.sha256 or None}
    return save_checkpoint(dst, loaded.model, arch=loaded.arch, arch_kwargs=loaded.arch_kwargs,
                           class_names=loaded.class_names, preprocess=loaded.spec, provenance=prov)
