"""The one ``versions()``: the software that shaped a result, recorded in checkpoints' provenance,
training runs and export sidecars. Torch and torchvision are read from the installed metadata, so
asking for the versions never imports them."""
from __future__ import annotations

import platform
from importlib import metadata

import cv2
import numpy as np

from cxr_studio import __version__


def _dist(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    return {
        "cxr_studio": str(__version__),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "torch": _dist("torch"),
        "torchvision": _dist("torchvision"),
    }
