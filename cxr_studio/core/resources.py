"""Where shipped resources (demo model, segmenter weights, icons, style) are found.

Searched in order: ``$CXR_STUDIO_RESOURCES``, a PyInstaller bundle's ``resources/``, the package's
own ``cxr_studio/resources/`` (a symlink to the top-level folder in the source tree, so wheels and
non-editable installs carry the files), and the checkout's top-level ``resources/``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEMO_MODEL = "models/cxrnet-demo.pt"
TB_MODEL = "models/cxrnet-tb.pt"  # trained on the NLM sets (resources/models/README.md)
LUNG_SEGMENTER = "models/lung-unet.pt"


def resource_dirs() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("CXR_STUDIO_RESOURCES")
    if env:
        dirs.append(Path(env))
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        dirs.append(Path(bundle) / "resources")
    here = Path(__file__).resolve()
    dirs.append(here.parents[1] / "resources")
    dirs.append(here.parents[2] / "resources")
    return dirs


def find_resource(relative: str) -> Path | None:
    """Path of a shipped resource, or None when it is not installed."""
    for d in resource_dirs():
        p = d / relative
        if p.exists():
            return p
    return None
