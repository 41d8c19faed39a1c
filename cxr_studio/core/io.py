"""Kept importable where scripts have always found it: every name of ``cxr_studio.core.imaging.io``."""
import importlib as _importlib

_module = _importlib.import_module("cxr_studio.core.imaging.io")
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
