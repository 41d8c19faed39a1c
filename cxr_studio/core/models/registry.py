"""Model builders registered by name (one file per family registers its builders here).

A builder is a function ``builder(**kwargs) -> nn.Module``. :func:`build_model` checks the keyword
arguments against the builder's signature (a typo becomes a clear ``ValueError``, not a TypeError
deep inside torch) and makes sure every model carries the attributes the rest of the app reads:

- ``model.layer_names``: readable name -> module path, in forward order;
- ``model.new_layers``: readable names of the layers trained from scratch (the transfer head);
- ``model.default_preprocess``: a ``PreprocessSpec`` dict;
- ``model.class_names``: default ``["normal", "abnormal"]``;
- ``model.arch`` / ``model.arch_kwargs``: how it was built (checkpoints store these).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from cxr_studio.core.imaging.spec import PreprocessSpec

DEFAULT_CLASS_NAMES = ["normal", "abnormal"]

Builder = Callable[..., nn.Module]


class UnknownArchitectureError(ValueError):
    """The architecture name is not registered."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture."""

    name: str
    builder: Builder
    family: str = ""
    description: str = ""
    # kwargs applied when rebuilding a model whose weights come from a checkpoint (e.g. skip the
    # ImageNet download: {"weights": "none"})
    rebuild_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults."""
        sig = inspect.signature(self.builder)
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


_REGISTRY: dict[str, ModelInfo] = {}
# functions name -> ModelInfo | None that know families too large to list (any torchvision classifier)
_RESOLVERS: list[Callable[[str], "ModelInfo | None"]] = []


def add_resolver(resolver: Callable[[str], "ModelInfo | None"]) -> None:
    """Let ``resolver`` answer for names that are not registered (asked in the order added)."""
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)


def register(
    name: str,
    *,
    family: str = "",
    description: str = "",
    rebuild_overrides: dict[str, Any] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name`` (a second registration of the same name
    with a different function is an error; re-importing the same module is harmless)."""

    def deco(builder: Builder) -> Builder:
        old = _REGISTRY.get(name)
        if old is not None and old.builder.__qualname__ != builder.__qualname__:
            raise ValueError(f"Architecture {name!r} is already registered by {old.builder.__module__}")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            family=family,
            description=doc,
            rebuild_overrides=dict(rebuild_overrides or {}),
        )
        return builder

    return deco


def architectures() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def model_meta(name: str) -> ModelInfo:
    """Metadata of a registered architecture; ``UnknownArchitectureError`` when not registered."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for resolver in _RESOLVERS:
        info = resolver(name) if isinstance(name, str) else None
        if info is not None:
            return info
    raise UnknownArchitectureError(
        f"Unknown architecture {name!r}; the known ones are: {', '.join(architectures()) or 'none'}, "
        "or any torchvision classification model (resnet50, densenet121, efficientnet_b0, ...)."
    )


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the options ``name`` accepts when ``kwargs`` has others."""
    info = model_meta(name)
    accepted = info.parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Architecture {name!r} has no option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}."
        )


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture with the given options (see ``model_meta(name).parameters``)."""
    info = model_meta(name)
    check_kwargs(name, kwargs)
    model = info.builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"Builder for {name!r} returned {type(model).__name__}, not an nn.Module")
    _ensure_attributes(model)
    model.arch = name
    model.arch_kwargs = dict(kwargs)
    return model


def _ensure_attributes(model: nn.Module) -> None:
    """Fill the common attributes a builder did not set."""
    if not isinstance(getattr(model, "layer_names", None), dict):
        model.layer_names = {p: p for p, _ in model.named_modules() if p}
    if not isinstance(getattr(model, "new_layers", None), list):
        model.new_layers = []
    if not isinstance(getattr(model, "default_preprocess", None), dict):
        model.default_preprocess = PreprocessSpec.preset("paper").to_dict()
    if not isinstance(getattr(model, "class_names", None), list):
        model.class_names = list(DEFAULT_CLASS_NAMES)
