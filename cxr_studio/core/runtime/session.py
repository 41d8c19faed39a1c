"""The app's state as plain Python with change notifications (no Qt, no torch work).

The GUI observes a `Session` through ``session.events.<field>`` (one `Signal` per field, emitted with
the new value) and ``session.events.changed`` (emitted with ``(name, value)`` for every field). Setters
validate (a `SessionError`, a `ValueError`, with a sentence a person understands) and emit only when
the value really changes. Torch work is not done here: the GUI sends it to the engine's worker
(through `cxr_studio.core.inspect.views`) and stores the results back with ``set_forward`` / ``set_heatmap``.

Use from one thread (the GUI thread); the worker never touches the session.

Policies (kept simple on purpose):
- ``select_layer(name)`` resets the channel to 0 (the GUI's "strongest" button picks another one).
- selecting another model keeps the layer when that model has it, else moves to its deepest conv
  layer; the class index is kept when valid for the new model, else reset to the last class
  (``abnormal`` for the paper's two-class models).
- ``spec`` None means "use the current model's preprocessing" (see `effective_spec`).
- a new image clears the preprocessing result, the cache (``cache``, a `ViewCache`), heatmap and region.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cxr_studio.core.runtime.events import SignalGroup
from cxr_studio.core.runtime.session_fields import USER_SPEC_KEYS, SessionError, choice, field, same, unit
from cxr_studio.core.runtime.view_cache import ViewCache
from cxr_studio.core.inspect.method_names import HEATMAP_METHODS, RANKINGS, SCALES
from cxr_studio.core.imaging.spec import PreprocessSpec
from cxr_studio.core.render import COLORMAPS, DEFAULT_OPACITY, DEFAULT_THRESHOLD
from cxr_studio.core.render.sidecar import sidecar_settings

METHODS: tuple[str, ...] = HEATMAP_METHODS  # the one list (core.method_names)

#: every observable field, in a stable order (one Signal each)
FIELDS: tuple[str, ...] = (
    "radiograph", "preprocessed", "models", "current_model_id", "layer", "channel", "method",
    "class_index", "threshold", "opacity", "colormap", "scale", "ranking", "region", "spec",
    "show_lung_outline", "forward", "heatmap", "show_lesion_outline", "lesion", "lesion_scores",
)


class Session:
    """Everything the workstation shows, with validation and change signals."""

    def __init__(self) -> None:
        self.events = SignalGroup(FIELDS)
        self._v: dict[str, Any] = {
            "radiograph": None,
            "preprocessed": None,
            "models": OrderedDict(),
            "current_model_id": None,
            "layer": None,
            "channel": 0,
            "method": "activation",
            "class_index": 1,
            "threshold": DEFAULT_THRESHOLD,
            "opacity": DEFAULT_OPACITY,
            "colormap": "jet",
            "scale": "channel",
            "ranking": "max",
            "region": None,
            "spec": None,
            "show_lung_outline": True,
            "forward": None,
            "heatmap": None,
            "show_lesion_outline": True,
            "lesion": None,  # the image's lesion outline (inspect.lesion_scores.LesionTarget) or None
            "lesion_scores": None,  # the map on screen against it (inspect.lesion_scores.score) or None
        }
        self.cache = ViewCache()  # what was computed for the current image, for reuse (core.runtime.view_cache)
        self._class_chosen: set[str] = set()  # models whose class was picked or defaulted (multi-label)

    # -- generic machinery -------------------------------------------------------------------
    def _set(self, name: str, value: Any, force: bool = False) -> bool:
        if not force and same(self._v[name], value):
            return False
        self._v[name] = value
        getattr(self.events, name).emit(value)
        self.events.changed.emit(name, value)
        return True

    def get(self, name: str) -> Any:
        if name not in FIELDS:
            raise SessionError(f"There is no session field called {name!r}.")
        return self._v[name]

    def set(self, name: str, value: Any) -> None:
        """Set a field by name through its validating setter."""
        if name not in FIELDS or name in ("models", "forward"):
            raise SessionError(f"The session field {name!r} cannot be set by name.")
        setattr(self, name, value)

    # -- image and preprocessing -------------------------------------------------------------
    @property
    def radiograph(self) -> Any:
        return self._v["radiograph"]

    def set_image(self, radiograph: Any, lung_mask: Any = None) -> None:
        """A new radiograph: clears preprocessing, the cache, heatmap and region; ``lung_mask``: the
        image's own lungs (a phantom's), used instead of segmenting (`ViewCache.reset`)."""
        if radiograph is not None and not hasattr(radiograph, "pixels"):
            raise SessionError(f"set_image needs a Radiograph, got {type(radiograph).__name__}.")
        self.cache.reset(lung_mask)
        self._set("forward", None)
        self._set("heatmap", None)
        self._set("region", None)
        self._set("lesion_scores", None)
        self._set("lesion", None)
        self._set("preprocessed", None)
        self._set("radiograph", radiograph, force=radiograph is not self._v["radiograph"])

    @property
    def preprocessed(self) -> Any:
        return self._v["preprocessed"]

    def set_preprocessed(self, preprocessed: Any) -> None:
        """The pipeline's result for the current image; the forward pass shown is set again (`set_forward`)."""
        if preprocessed is not None and not hasattr(preprocessed, "geometry"):
            raise SessionError(f"set_preprocessed needs a Preprocessed, got {type(preprocessed).__name__}.")
        if preprocessed is self._v["preprocessed"]:
            return
        self._set("forward", None)
        self._set("heatmap", None)
        self._set("preprocessed", preprocessed, force=True)

    @property
    def spec(self) -> PreprocessSpec | None:
        return self._v["spec"]

    @spec.setter
    def spec(self, spec: PreprocessSpec | dict | None) -> None:
        if isinstance(spec, dict):
            spec = PreprocessSpec.from_dict(spec)
        if spec is not None and not isinstance(spec, PreprocessSpec):
            raise SessionError(f"spec must be a PreprocessSpec, a dict or None, got {type(spec).__name__}.")
        self._set("spec", spec)

    def effective_spec(self, model_id: str | None = None) -> PreprocessSpec:
        """The one rule (the app computes with it): a model's spec (default: the current one) with the
        user's Pipeline-dock choices (USER_SPEC_KEYS) on top; without a model the user's spec, else the default."""
        loaded = self.models.get(model_id) if model_id else self.current_model
        base = getattr(loaded, "spec", None)
        base = PreprocessSpec.from_dict(base) if isinstance(base, dict) else base
        if not isinstance(base, PreprocessSpec):
            return self.spec if self.spec is not None else PreprocessSpec()
        return base if self.spec is None else base.replace(**{k: getattr(self.spec, k) for k in USER_SPEC_KEYS})

    # -- models -----------------------------------------------------------------------------
    @property
    def models(self) -> "OrderedDict[str, Any]":
        """Loaded models, id -> LoadedCheckpoint (a read-only view by convention: use add/remove)."""
        return self._v["models"]

    def add_model(self, model_id: str, loaded: Any) -> None:
        """Add (or replace) a loaded checkpoint; the first one becomes current."""
        if not isinstance(model_id, str) or not model_id:
            raise SessionError(f"A model id must be a non-empty string, got {model_id!r}.")
        if not hasattr(loaded, "model"):
            raise SessionError(f"add_model needs a LoadedCheckpoint-like object with .model, got {loaded!r}.")
        models = OrderedDict(self.models)
        models[model_id] = loaded
        self.cache.drop_model(model_id)
        self._class_chosen.discard(model_id)
        self._set("models", models, force=True)
        if self.current_model_id is None or self.current_model_id == model_id:
            self._select_model(model_id, force=True)

    def remove_model(self, model_id: str) -> None:
        """Remove a model; when it was current, the next one (else the previous, else None) is."""
        if model_id not in self.models:
            raise SessionError(f"No model with id {model_id!r} is loaded.")
        ids = list(self.models)
        pos = ids.index(model_id)
        models = OrderedDict(self.models)
        del models[model_id]
        self.cache.drop_model(model_id)
        self._set("models", models, force=True)
        if self.current_model_id == model_id:
            rest = list(models)
            fallback = rest[min(pos, len(rest) - 1)] if rest else None
            self._select_model(fallback, force=True)

    @property
    def current_model_id(self) -> str | None:
        return self._v["current_model_id"]

    @current_model_id.setter
    def current_model_id(self, model_id: str | None) -> None:
        if model_id is not None and model_id not in self.models:
            raise SessionError(
                f"No model with id {model_id!r} is loaded; loaded: {', '.join(self.models) or 'none'}."
            )
        if model_id != self.current_model_id:
            self._select_model(model_id)

    @property
    def current_model(self) -> Any:
        """The current LoadedCheckpoint, or None."""
        mid = self.current_model_id
        return self.models.get(mid) if mid is not None else None

    def _select_model(self, model_id: str | None, force: bool = False) -> None:
        self._set("current_model_id", model_id, force=force)
        self._set("forward", self.cached_forward(model_id) if model_id else None)
        self._set("heatmap", None)
        loaded = self.current_model
        if loaded is None:
            self._set("layer", None)
            self._set("channel", 0)
            return
        names = self.layer_names(loaded)
        if self.layer is None or (names and self.layer not in names):
            # torch-free at import: the GUI builds its first window with a Session, before torch
            from cxr_studio.core.inspect.views import default_layer

            self._set("layer", default_layer(loaded.model))
            self._set("channel", 0)
        n_cls = self.class_count(loaded)
        if n_cls is not None and not (0 <= self.class_index < n_cls):
            self._set("class_index", n_cls - 1)

    @staticmethod
    def layer_names(loaded: Any) -> list[str]:
        """Readable layer names of a loaded model, in forward order ([] when unknown)."""
        return list(getattr(getattr(loaded, "model", None), "layer_names", {}) or {})

    @staticmethod
    def class_count(loaded: Any) -> int | None:
        names = getattr(loaded, "class_names", None)
        return len(names) if names else None

    def browsable_layers(self) -> list[str]:
        """The current model's conv-like layers (what Page Up/Down walks through)."""
        loaded = self.current_model
        if loaded is None:
            return []
        from cxr_studio.core.inspect.views import conv_layer_names

        return conv_layer_names(loaded.model)

    # -- layer / channel ----------------------------------------------------------------------
    @property
    def layer(self) -> str | None:
        return self._v["layer"]

    @layer.setter
    def layer(self, name: str | None) -> None:
        self.select_layer(name)

    def select_layer(self, name: str | None) -> None:
        """Select a layer by readable name; the channel goes back to 0."""
        if name is not None:
            names = self.layer_names(self.current_model)
            if names and name not in names:
                raise SessionError(f"The current model has no layer {name!r}.")
        if self._set("layer", name):
            self._set("heatmap", None)
            self._set("channel", 0)

    def channel_count(self, layer: str | None = None) -> int | None:
        """Channels of a layer: from the cached forward pass, else the module (None if unknown)."""
        layer = layer or self.layer
        if layer is None:
            return None
        fwd = self.forward
        acts = getattr(fwd, "activations", None) or {}
        if layer in acts:
            return int(acts[layer].shape[0])
        loaded = self.current_model
        if loaded is not None:
            from cxr_studio.core.inspect.views import module_channels

            return module_channels(loaded.model, layer)
        return None

    @property
    def channel(self) -> int:
        return self._v["channel"]

    @channel.setter
    def channel(self, channel: int) -> None:
        if isinstance(channel, bool) or not hasattr(channel, "__index__"):
            raise SessionError(f"channel must be a whole number, got {channel!r}.")
        c = int(channel)
        n = self.channel_count()
        if c < 0 or (n is not None and c >= n):
            limit = f"0..{n - 1}" if n is not None else ">= 0"
            raise SessionError(f"channel {c} is out of range for layer {self.layer!r} ({limit}).")
        self._set("channel", c)

    def next_channel(self, step: int = 1) -> int:
        """Move ``step`` channels, wrapping within the layer; returns the new channel."""
        n = self.channel_count()
        if not n:
            raise SessionError("The channel count of this layer is not known yet (run the model first).")
        self.channel = (self.channel + int(step)) % n
        return self.channel

    def next_layer(self, step: int = 1) -> str | None:
        """Move ``step`` layers through `browsable_layers` (wrapping); returns the new layer."""
        layers = self.browsable_layers()
        if not layers:
            return self.layer
        pos = layers.index(self.layer) if self.layer in layers else (-1 if step > 0 else 0)
        self.select_layer(layers[(pos + int(step)) % len(layers)])
        return self.layer

    # -- rendering settings --------------------------------------------------------------------
    method = field("method", lambda v: choice(v, METHODS, "heatmap method"), " | ".join(METHODS))
    threshold = field("threshold", lambda v: unit(v, "threshold"), "map values below it are transparent (0..1)")
    opacity = field("opacity", lambda v: unit(v, "opacity"), "overlay opacity (0..1)")
    colormap = field("colormap", lambda v: choice(v, COLORMAPS, "colormap"), "a name in render.COLORMAPS")
    scale = field("scale", lambda v: choice(v, SCALES, "scale mode"), "channel | layer map scaling")
    ranking = field("ranking", lambda v: choice(v, RANKINGS, "ranking method"), "max | mean | lungs | region")
    show_lung_outline = field("show_lung_outline", bool, "draw the lung-mask outline")
    show_lesion_outline = field("show_lesion_outline", bool, "draw the lesion outline (when the image has one)")
    lesion = field("lesion", lambda v: v, "the image's lesion outline (LesionTarget) or None")
    lesion_scores = field("lesion_scores", lambda v: None if v is None else dict(v),
                          "pointing hit, energy inside and IoU of the map on screen against the lesion")

    @property
    def class_index(self) -> int:
        return self._v["class_index"]

    @class_index.setter
    def class_index(self, value: int) -> None:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise SessionError(f"class index must be a whole number, got {value!r}.")
        v = int(value)
        n = self.class_count(self.current_model)
        if v < 0 or (n is not None and v >= n):
            raise SessionError(f"class index {v} is out of range (the model has {n} classes).")
        self._class_chosen.add(self.current_model_id or "")
        self._set("class_index", v)

    @property
    def region(self) -> Any:
        return self._v["region"]

    @region.setter
    def region(self, value: Any) -> None:
        if value is not None and not (hasattr(value, "kind") and hasattr(value, "points")):
            raise SessionError(f"region must be a Region (kind, points) or None, got {value!r}.")
        self._set("region", value)

    # -- results from the worker -----------------------------------------------------------------
    @property
    def forward(self) -> Any:
        """The current model's ForwardResult for the current image (None until computed)."""
        return self._v["forward"]

    def set_forward(self, model_id: str, result: Any) -> None:
        """Store a forward result for ``model_id`` with its current spec (cached until the image or model changes)."""
        if model_id not in self.models:
            raise SessionError(f"No model with id {model_id!r} is loaded.")
        self.cache.keep_forward(model_id, self.effective_spec(model_id), result)
        if model_id == self.current_model_id:
            self._set("forward", result, force=True)
            probs = getattr(result, "probabilities", None)  # a multi-label model explains its most probable
            if getattr(self.models[model_id], "multi_label", False) and model_id not in self._class_chosen \
                    and probs is not None and len(probs):  # class until the user picks one
                self._class_chosen.add(model_id)
                self._set("class_index", max(range(len(probs)), key=lambda i: float(probs[i])))

    def cached_forward(self, model_id: str | None = None) -> Any:
        """The forward pass of a model (default: the current one) with its current spec, or None."""
        mid = model_id or self.current_model_id
        return self.cache.forward_for(mid, self.effective_spec(mid)) if mid else None

    @property
    def heatmap(self) -> Any:
        """The `views.HeatmapResult` on screen (None until computed, and again when image, model or layer change)."""
        return self._v["heatmap"]

    def set_heatmap(self, result: Any) -> None:
        self._set("heatmap", result, force=True)

    # -- export ------------------------------------------------------------------------------------
    def render_settings(self, heatmap: Any = None) -> dict[str, Any]:
        """The export sidecar's settings for the view (the one builder, `render.sidecar.sidecar_settings`) of
        ``heatmap`` (default: the one shown): its model, layer, channel and method are the ones described."""
        hm = self.heatmap if heatmap is None else heatmap
        pre = self.preprocessed
        model_id = getattr(hm, "model_id", None) or self.current_model_id
        fwd = self.cached_forward(model_id)
        return sidecar_settings(
            loaded=self.models.get(model_id) if model_id else None, radiograph=self.radiograph,
            preprocessed=pre, model_id=model_id, layer=getattr(hm, "layer", None) or self.layer,
            # the heatmap's own channel when one is shown ("strongest" resolved; None for Grad-CAM)
            channel=getattr(hm, "channel", None) if hm is not None else self.channel,
            method=getattr(hm, "method", None) or self.method, class_index=self.class_index,
            scale=self.scale, ranking=self.ranking, region=self.region, threshold=self.threshold,
            opacity=self.opacity, colormap=self.colormap,
            spec=pre.spec if pre is not None else self.effective_spec(),
            probabilities=getattr(fwd, "probabilities", None),
            lesion_scores=self.lesion_scores if hm is self.heatmap else None, valid=getattr(hm, "valid", None),
        )
