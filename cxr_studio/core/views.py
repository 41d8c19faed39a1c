"""Kept importable where scripts have always found it: every name of ``cxr_studio.core.inspect.views``."""
import importlib as _importlib

_module = _importlib.import_module("cxr_studio.core.inspect.views")
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
