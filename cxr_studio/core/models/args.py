"""The command-line flags that say how to open a model file, shared by every command
(``cxr-studio``, ``cxr-studio export``, ``cxr-studio-train eval`` / ``export-release``).

Plain argparse, no torch: the app parses its options before torch is imported.
``models.importers.open_model(path, **model_options(args))`` opens the file.
"""
from __future__ import annotations

import argparse
from typing import Any

PRESETS = ("paper", "torchvision", "xrv")


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated class names, got {text!r}")
    return names


def _size(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if not 8 <= v <= 4096:
        raise argparse.ArgumentTypeError(f"must be between 8 and 4096, got {v}")
    return v


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--arch``, ``--classes``, ``--input-size``, ``--preset``, ``--multi-label``: how to read a
    model file that does not describe itself (the same flags in every command)."""
    g = p.add_argument_group("model file", "how to open a model that is not a CXR Studio checkpoint")
    g.add_argument("--arch", default=None, metavar="NAME",
                   help="architecture of a state dict: a CXR Studio one (cxrnet, vgg16...), any torchvision "
                        "classifier (resnet50, densenet121, efficientnet_b0...), timm:NAME or xrv:NAME; "
                        "not needed for CXR Studio checkpoints, TorchScript or .pt2 files")
    g.add_argument("--classes", type=_classes, default=None, metavar="A,B,...",
                   help="class names, one per model output")
    g.add_argument("--input-size", type=_size, default=None, metavar="N", help="model input size in pixels")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="preprocessing: paper (227, lung crop, CLAHE), torchvision (224, ImageNet "
                        "normalisation), xrv (224, one channel, [-1024, 1024])")
    g.add_argument("--multi-label", action="store_true", default=None,
                   help="the outputs are independent sigmoid scores (one probability per class)")


def model_options(ns: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`open_model` from parsed :func:`add_model_arguments` flags."""
    return {k: getattr(ns, k, None) for k in ("arch", "classes", "input_size", "preset", "multi_label")}
