"""What a view shows, computed in the worker: the one implementation used by the GUI, the batch
exporter and the tests.

``compute_forward(loaded, preprocessed)`` runs the model once recording every layer;
``compute_heatmap(...)`` turns a layer/channel (or Grad-CAM) choice into a 0..1 map on the model
input and on the original radiograph, with the channel ranking the channel grid shows.
Pure functions: they never touch a `Session` (the GUI stores the results there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from cxr_studio.core.inspect.activations import ForwardResult, Region, forward_with_activations, rank_channels
from cxr_studio.core.models.placement import data_mask, layer_placement, place_on_input
from cxr_studio.core.inspect.saliency import channel_map, grad_cam, to_original
from cxr_studio.core.inspect.method_names import HEATMAP_METHODS
from cxr_studio.core.models.layers import conv_layers, deepest_conv, layer_names
from cxr_studio.core.inspect.saliency_methods import saliency_map

# "activation" (a chosen channel) + every saliency method; "channel-max"/"channel-lungs" are the
# strongest channel by max / in the lungs (what "activation" with channel="strongest" also shows)
METHODS: tuple[str, ...] = HEATMAP_METHODS  # the one list (core.method_names)
STRONGEST = "strongest"


class ViewError(ValueError):
    """A view that cannot be computed (unknown method, non-spatial layer, missing input)."""


@dataclass(eq=False)
class HeatmapResult:
    """One heatmap: on the model input grid, on the original radiograph, and how it was chosen.

    The one heatmap type: `compute_heatmap` returns it, the GUI shows it (``Session.heatmap``) and
    exports it. ``map_original`` is computed from ``geometry`` on first use (a full-size radiograph's
    map costs tens of milliseconds; the GUI draws ``map_input`` over ``crop_box`` and rarely needs it).
    """

    map_input: np.ndarray  # (N, N) float32 0..1 on the model input, cells at their receptive-field centres
    geometry: Any = None  # the preprocessing's Geometry (model input <-> original); None: map_input is the original
    channel: int | None = None  # the channel shown (None for Grad-CAM)
    ranking: list[tuple[int, float]] = field(default_factory=list)  # strongest first
    layer: str = ""
    method: str = "activation"
    class_index: int | None = None  # the class explained (Grad-CAM) / predicted
    scale: str = "channel"
    ranking_method: str = "max"
    valid: np.ndarray | None = None  # (N, N) bool: where map_input has a value (layer maps); None: everywhere
    value_range: tuple[float, float] = (0.0, 1.0)  # what 0 and 1 stand for (activation units; 0..1 relative)
    model_id: str = ""  # the model it explains (set by the app, which may hold several)
    _original: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def map_original(self) -> np.ndarray:
        """(H, W) float32 0..1 on the original radiograph (0 outside the crop)."""
        if self._original is None:
            self._original = self.map_input if self.geometry is None else to_original(self.map_input, self.geometry)
        return self._original

    @property
    def crop_box(self) -> tuple[int, int, int, int] | None:
        """(y0, x0, y1, x1) of the original that ``map_input`` covers (None: all of it)."""
        return None if self.geometry is None else tuple(int(v) for v in self.geometry.crop_box)

    def settings(self) -> dict[str, Any]:
        """The plain values describing this heatmap (for export sidecars)."""
        return {
            "layer": self.layer, "channel": self.channel, "method": self.method,
            "class_index": self.class_index, "scale": self.scale, "ranking": self.ranking_method,
        }


def _loaded_model(loaded: Any) -> Any:
    model = getattr(loaded, "model", loaded)
    if not hasattr(model, "forward"):
        raise ViewError(f"Expected a loaded checkpoint or a torch model, got {type(loaded).__name__}.")
    return model


def compute_forward(loaded: Any, preprocessed: Any, names: Sequence[str] | None = None) -> ForwardResult:
    """One forward pass of the preprocessed image recording ``names`` (default: every layer)."""
    if preprocessed is None:
        raise ViewError("There is no preprocessed image to run the model on.")
    return forward_with_activations(_loaded_model(loaded), preprocessed.model_input, names)


def default_layer(model: Any) -> str | None:
    """The layer a view starts on: the deepest conv (its ReLU when one follows), else the last layer."""
    try:
        return deepest_conv(model)
    except ValueError:  # no convolution at all
        names = list(layer_names(model))
        return names[-1] if names else None


def conv_layer_names(model: Any) -> list[str]:
    """Readable names of the model's convolutions, in forward order (Page Up/Down walks these)."""
    return list(conv_layers(model))


def module_channels(model: Any, layer: str) -> int | None:
    """Channels a layer outputs without running it: its ``out_channels``, or the last conv's before it
    (ReLU / LRN / pool); None for fully connected layers or unknown names."""
    shapes = getattr(model, "layer_shapes", None)  # output shapes found by models.discovery
    if isinstance(shapes, dict) and layer in shapes:
        return int(shapes[layer][0]) if len(shapes[layer]) == 3 else None
    modules = dict(model.named_modules())
    last = None
    for name, path in layer_names(model).items():
        mod = modules.get(path)
        if hasattr(mod, "out_channels"):
            last = int(mod.out_channels)
        elif hasattr(mod, "out_features"):
            last = None
        if name == layer:
            return last
    return None


def rank(
    act: np.ndarray, ranking: str, preprocessed: Any, region: Region | None = None, placement: Any = None
) -> list[tuple[int, float]]:
    """Channel ranking of one layer with the preprocessing's geometry and lung mask (sampled at the
    cells' receptive-field centres when ``placement`` is given)."""
    return rank_channels(
        act,
        ranking,
        geometry=getattr(preprocessed, "geometry", None),
        lung_mask=getattr(preprocessed, "lung_mask", None),
        region=region,
        placement=placement,
    )


def _rank_or_empty(
    act: np.ndarray, ranking: str, preprocessed: Any, region: Region | None, placement: Any = None
) -> list[tuple[int, float]]:
    """The ranking when it can be computed (e.g. not "region" without a region), else []."""
    try:
        return rank(act, ranking, preprocessed, region, placement)
    except ValueError:
        return []


def compute_heatmap(
    loaded: Any,
    preprocessed: Any,
    forward: ForwardResult | None,
    layer: str,
    channel: int | str = STRONGEST,
    method: str = "activation",
    class_index: int | None = None,
    scale: str = "channel",
    ranking: str = "max",
    region: Region | None = None,
    *,
    progress: Any = None,
    cancel: Any = None,
    partial: Any = None,
) -> HeatmapResult:
    """The heatmap of one view.

    ``method="activation"``: channel ``channel`` of ``layer`` (``"strongest"`` = first of the
    ranking), scaled per channel or per layer, as the paper did. ``"gradcam"`` / ``"gradcam++"``:
    the class-discriminative map at ``layer`` for ``class_index`` (None = the predicted class).
    ``forward`` (from `compute_forward`) is reused when it holds ``layer``; else the layer is run.
    The ranking is returned for spatial layers; it is best-effort ([] when the ranking method lacks
    its mask or region) unless it picks the channel (``"strongest"``), where its error is raised.
    The slow methods (`method_names.SLOW_METHODS`) report ``progress(done, total)``, stop on
    ``cancel`` (an Event; `engine.Cancelled` is raised) and, where the method allows, hand
    ``partial`` an (N, N) estimate of ``map_input`` as they go (`saliency_methods.saliency_map`).
    """
    if method not in METHODS:
        raise ViewError(f"Unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}.")
    if preprocessed is None:
        raise ViewError("There is no preprocessed image to compute a heatmap for.")
    model = _loaded_model(loaded)
    if forward is None or layer not in forward.activations:
        forward = compute_forward(model, preprocessed, [layer])
    act = np.asarray(forward.activations[layer])
    spatial = act.ndim == 3
    placement = layer_placement(model, layer)
    n = int(preprocessed.geometry.input_size)
    predicted = int(np.argmax(forward.probabilities)) if len(forward.probabilities) else None

    if method == "activation":
        if not spatial:
            raise ViewError(
                f"Layer {layer!r} is fully connected (output {act.shape}); pick a conv, ReLU or pool layer."
            )
        if channel == STRONGEST:
            order = rank(act, ranking, preprocessed, region, placement)  # its errors pick the channel
            ch: Any = order[0][0]
        else:
            order, ch = _rank_or_empty(act, ranking, preprocessed, region, placement), channel
        if isinstance(ch, str) or isinstance(ch, bool):
            raise ViewError(f"channel must be a number or 'strongest', got {channel!r}.")
        return channel_heatmap(act, int(ch), scale, placement, preprocessed.geometry, layer=layer, ranking=order,
                               class_index=predicted, ranking_method=ranking)

    order = _rank_or_empty(act, ranking, preprocessed, region, placement) if spatial else []
    k = predicted if class_index is None else int(class_index)
    if method not in ("gradcam", "gradcam++"):  # the other saliency methods (core.inspect.saliency_methods)
        s = saliency_map(model, preprocessed.tensor(next(model.parameters()).device), method, layer, k,
                         geometry=preprocessed.geometry, lung_mask=getattr(preprocessed, "lung_mask", None),
                         progress=progress, cancel=cancel, partial=partial)
        return HeatmapResult(
            map_input=s.map_input, geometry=preprocessed.geometry, channel=s.channel,
            ranking=order, layer=layer, method=method, class_index=k, scale=scale, ranking_method=ranking,
            valid=data_mask(act.shape[1:], placement, n) if spatial and s.layer is not None else None,
        )
    cam = grad_cam(model, preprocessed.model_input, layer, k, plus=(method == "gradcam++"), grid=True)
    m = place_on_input(cam, placement, n)
    return HeatmapResult(
        map_input=m, geometry=preprocessed.geometry, channel=None, ranking=order,
        layer=layer, method=method, class_index=k, scale=scale, ranking_method=ranking,
        valid=data_mask(cam.shape, placement, n),
    )


def channel_heatmap(act: np.ndarray, channel: int, scale: str, placement: Any, geometry: Any, *,
                    layer: str = "", **meta: Any) -> HeatmapResult:
    """Channel ``channel`` of a (C, h, w) activation on the model input (0..1, cells at their receptive-field
    centres), with the activation values its 0 and 1 stand for (the colour bar's units) and where it has
    values: what `compute_heatmap` returns for "activation", and what the GUI computes on its own thread
    from a cached forward pass (a channel switch needs no worker trip). ``meta``: the other
    `HeatmapResult` fields (ranking, class_index, ranking_method, model_id)."""
    a = np.asarray(act, dtype=np.float32)
    n = int(geometry.input_size)
    m = place_on_input(channel_map(a, int(channel), scale), placement, n)  # a channel out of range: ValueError
    part = a[int(channel)] if scale == "channel" else a
    lo = float(part.min()) if scale == "channel" else min(0.0, float(part.min()))
    return HeatmapResult(map_input=m, geometry=geometry, channel=int(channel), layer=layer, method="activation",
                         scale=scale, valid=data_mask(a.shape[1:], placement, n), value_range=(lo, float(part.max())),
                         **meta)
