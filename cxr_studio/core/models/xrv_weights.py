"""TorchXRayVision's published weights, opened without unpickling code.

The package loads them with ``torch.load(..., weights_only=False)``: its DenseNet files are whole
pickled models, so a file planted in its cache (``~/.torchxrayvision``) could run any code. Here the
package builds its model as usual (labels, operating thresholds, input resolution), but the ``torch``
its models module sees loads with ``weights_only=True``, allowing only network layer classes
(``torch.nn`` modules and torchxrayvision's own ``nn.Module`` subclasses); anything else in the file
is refused in one sentence before a byte of it is unpickled.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
import zipfile
from typing import Any, Iterator

import torch
import torch.nn as nn

LAYER_MODULES = ("torch.nn.modules.", "torchxrayvision.")
_lock = threading.Lock()


class UnsafeWeightsError(ValueError):
    """A weights file that names something other than network layers."""


def layer_class(qualified: str) -> type | None:
    """The ``nn.Module`` subclass a pickle global names, when it is a layer of torch.nn or of
    torchxrayvision; else None."""
    module, _, attr = qualified.rpartition(".")
    if not module.startswith(LAYER_MODULES):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def load_layers_only(f: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.load`` with ``weights_only=True``, the file's network layer classes allowed (the
    globals a zip checkpoint names are listed before a byte of it is unpickled). A legacy (pre-1.6)
    whole-model file cannot be read that way at all: refused, with how to convert it once."""
    if not zipfile.is_zipfile(f):
        raise UnsafeWeightsError(
            f"{f} is in PyTorch's legacy whole-model format, which cannot be read without unpickling code. "
            "Convert it once in a Python you trust: torch.save(torchxrayvision.models.get_model(NAME)"
            ".state_dict(), 'weights.pth'), then open --checkpoint weights.pth --arch xrv:densenet121")
    names = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    allowed: list[type] = []
    for name in names:
        cls = layer_class(name)
        if cls is None:
            raise UnsafeWeightsError(f"{f} names {name}, which is not a network layer, so it is not unpickled "
                                     "(a weights file needs no code)")
        allowed.append(cls)
    kwargs["weights_only"] = True
    with torch.serialization.safe_globals(allowed):
        return torch.load(f, *args, **kwargs)


class _TorchLoadingLayersOnly:
    """``torch`` as a package's module sees it while it loads weights: ``load`` is `load_layers_only`."""

    load = staticmethod(load_layers_only)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


@contextlib.contextmanager
def layers_only(module: Any) -> Iterator[None]:
    """While inside, ``module.torch.load`` (the package's own calls) loads layers only."""
    with _lock:
        saved = module.torch
        module.torch = _TorchLoadingLayersOnly()
        try:
            yield
        finally:
            module.torch = saved
