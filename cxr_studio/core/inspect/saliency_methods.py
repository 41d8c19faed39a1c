"""The one list of saliency methods, by name, and one call that computes any of them.

``saliency_map(model, x, method, layer, class_index, ...)`` returns a `Saliency` whose ``map_input``
is an (N, N) float32 map in 0..1 on the model input: layer methods are computed on the layer's
grid and placed at the cells' receptive-field centres (`placement.place_on_input`, as the app draws
every map); input methods (occlusion, integrated gradients) are on the input already.
The names are `method_names.SALIENCY_METHODS` (torch-free), which the command lines and the GUI read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn

from cxr_studio.core.inspect.method_names import SALIENCY_METHODS, SLOW_METHODS
from cxr_studio.core.models.placement import data_mask, layer_placement, place_on_input
from cxr_studio.core.inspect.saliency_cam import LIBRARY_CAMS, SCORECAM_BATCH, SaliencyError, cam_grid
from cxr_studio.core.inspect.saliency_perturb import integrated_gradients_map, occlusion_map
from cxr_studio.core.inspect.activations import forward_with_activations

METHODS: tuple[str, ...] = SALIENCY_METHODS  # the one list lives in method_names (no torch import)
INPUT_METHODS: tuple[str, ...] = ("occlusion", "integrated-gradients")  # attribute the input pixels
LAYER_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in INPUT_METHODS)
CLASS_FREE: tuple[str, ...] = ("channel-max", "channel-lungs", "eigencam")  # ignore the class asked for
SOURCE = {  # where each method's definition comes from (recorded in outputs)
    "channel-max": "cxr_studio (the paper's strongest channel, by max)",
    "channel-lungs": "cxr_studio (the strongest channel, by mean inside the lungs)",
    "gradcam": "cxr_studio (= pytorch-grad-cam GradCAM)",
    "gradcam++": "cxr_studio (= pytorch-grad-cam GradCAMPlusPlus)",
    **{k: f"pytorch-grad-cam {v}" for k, v in LIBRARY_CAMS.items()},
    "occlusion": "cxr_studio (= captum Occlusion)",
    "integrated-gradients": "cxr_studio (= captum IntegratedGradients)",
}


@dataclass
class Saliency:
    map_input: np.ndarray  # (N, N) float32 0..1 on the model input
    method: str
    layer: str | None  # None for input methods
    class_index: int
    channel: int | None = None  # the channel shown by channel-max / channel-lungs


@dataclass(frozen=True)
class Options:
    """Costs of the slow methods: Score-CAM's masks per forward pass, occlusion's window and stride
    (None: 1/7 of the input, half of that), integrated gradients' steps; ``batch_size`` forward
    passes at once for occlusion and integrated gradients."""

    scorecam_batch: int = SCORECAM_BATCH
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    ig_steps: int = 32
    batch_size: int = 32


def parse_methods(text: str | None) -> list[str]:
    """``"gradcam,occlusion"`` -> a checked list (None or "all" -> every method)."""
    if text is None or text.strip().lower() == "all":
        return list(METHODS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise SaliencyError(f"Unknown saliency method {', '.join(bad) or repr(text)}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def saliency_map(model: nn.Module, x: Any, method: str, layer: str | None, class_index: int, *,
                 geometry: Any = None, lung_mask: np.ndarray | None = None, options: Options = Options(),
                 progress: Callable[[int, int], None] | None = None, cancel: Any = None,
                 partial: Callable[[np.ndarray], None] | None = None) -> Saliency:
    """One method's map of batch item 0 of ``x`` explaining ``class_index`` (layer methods at
    ``layer``; ``geometry`` and ``lung_mask`` of the original radiograph for channel-lungs).
    The slow methods report ``progress(done, total)``, stop between batches when ``cancel`` (an
    Event) is set (raising `engine.Cancelled`), and occlusion and integrated gradients hand
    ``partial`` an (N, N) estimate of the map after each batch."""
    if method not in METHODS:
        raise SaliencyError(f"Unknown saliency method {method!r}; choose from {', '.join(METHODS)}")
    n = int(x.shape[-1])
    k = int(class_index)
    if method == "occlusion":
        m = occlusion_map(model, x, k, options.occlusion_window, options.occlusion_stride, options.batch_size,
                          progress, cancel, partial)
        return Saliency(m, method, None, k)
    if method == "integrated-gradients":
        m = integrated_gradients_map(model, x, k, options.ig_steps, max(1, options.batch_size // 2), progress,
                                     cancel, partial)
        return Saliency(m, method, None, k)
    if layer is None:
        raise SaliencyError(f"{method} explains a layer; give one (e.g. the deepest conv)")
    placement = layer_placement(model, layer)
    grid, ch = cam_grid(model, x, layer, method, k, geometry=geometry, lung_mask=lung_mask, placement=placement,
                        batch_size=options.scorecam_batch, progress=progress, cancel=cancel)
    return Saliency(place_on_input(grid, placement, n), method, layer, k, ch)


def map_support(model: nn.Module, x: Any, method: str, layer: str | None) -> np.ndarray:
    """(N, N) bool: where ``method``'s maps can be non-zero on the input (the layer's cells and half
    a stride around them for layer methods; everywhere for input methods). Comparisons of two maps
    (sanity checks) use only this part, so a shared empty border does not count as agreement."""
    n = int(x.shape[-1])
    if method in INPUT_METHODS or layer is None:
        return np.ones((n, n), bool)
    act = forward_with_activations(model, x, [layer]).activations[layer]
    if act.ndim != 3:
        return np.ones((n, n), bool)
    return data_mask(act.shape[1:], layer_placement(model, layer), n)
