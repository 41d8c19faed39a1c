"""Where shipped resources (demo model, segmenter weights, icons, style) are found.

Searched in order: ``$CXR_STUDIO_RESOURCES``, a PyInstaller bundle's ``resources/``, and the
top-level ``resources/`` folder of the source checkout (editable installs).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEMO_MODEL = "models/cxrnet-demo.pt"
LUNG_SEGMENTER = "models/lung-unet.pt"


def resource_dirs() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("CXR_STUDIO_RESOURCES")
    if env:
        dirs.append(Path(env))
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        dirs.append(Path(bundle) / "resources")
    dirs.append(Path(__file__).resolve().parents[2] / "resources")
    return dirs


def find_resource(relative: str) -> Path | None:
    """Path of a shipped resource, or None when it is not installed."""
    for d in resource_dirs():
        p = d / relative
        if p.exists():
            return p
    return None
