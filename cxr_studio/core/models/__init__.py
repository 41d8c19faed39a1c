"""Model registry and the model families (cxrnet, AlexNet/VGG from torchvision, lung U-Net).

Importing this package registers every family; build one with ``build_model(name, **kwargs)``;
``describe(name, **kwargs)`` prints its layer table and parameter count.
"""
from __future__ import annotations

import importlib
import importlib.util

from cxr_studio.core.models import cxrnet, torchvision_any, torchvision_nets  # noqa: F401  (registers the builders)
from cxr_studio.core.models.layers import (
    LayerNotFoundError,
    conv_layers,
    count_parameters,
    deepest_conv,
    describe,
    describe_model,
    layer_names,
    layer_table,
    layer_type,
    module_path,
    readable_name,
    resolve_layer,
)
from cxr_studio.core.models.registry import (
    DEFAULT_CLASS_NAMES,
    ModelInfo,
    UnknownArchitectureError,
    architectures,
    build_model,
    model_meta,
    register,
)
from cxr_studio.core.models.torchvision_nets import WeightsFileError, WeightsUnavailableError

# optional families added by other modules (the lung U-Net registers itself when present)
if importlib.util.find_spec(f"{__name__}.unet") is not None:
    importlib.import_module(f"{__name__}.unet")

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "LayerNotFoundError",
    "ModelInfo",
    "UnknownArchitectureError",
    "WeightsFileError",
    "WeightsUnavailableError",
    "architectures",
    "build_model",
    "conv_layers",
    "count_parameters",
    "deepest_conv",
    "describe",
    "describe_model",
    "layer_names",
    "layer_table",
    "layer_type",
    "model_meta",
    "module_path",
    "readable_name",
    "register",
    "resolve_layer",
]
