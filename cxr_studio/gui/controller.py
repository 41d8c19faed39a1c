"""Glue between the `Session` (state), the worker (torch work) and the widgets.

The controller reacts to session changes by sending jobs (`gui.jobs`) to the worker through the
`WorkerBridge`, caches what came back (preprocessing per spec, forward passes per model), and
publishes results as Qt signals the docks and the central view draw. Cheap numpy work on cached
activations (one channel's map) runs on the GUI thread so a channel switch needs no worker trip;
threshold / opacity / colormap never reach the controller's compute paths at all.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from . import jobs
from .bridge import WorkerBridge
from .jobs import HeatmapView
from .lung_masks import LungMasks
from .saliency_runner import SaliencyRunner


class Controller(QObject):
    pipeline_ready = Signal(object)  # jobs.PipelineResult
    forward_ready = Signal(str)  # model id
    layers_ready = Signal(str, object)  # model id, list[LayerInfo]
    ranking_ready = Signal(str, object)  # layer, [(channel, score)]
    thumbnails_ready = Signal(str, object)  # layer, (C, t, t, 4) uint8
    heatmap_ready = Signal(object)  # HeatmapView
    models_changed = Signal()
    message = Signal(str)  # a warning / information for the status bar
    error = Signal(str)  # one clear sentence for a dialog

    def __init__(self, session: Any, bridge: WorkerBridge, manager: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.bridge = bridge
        self.manager = manager
        self.lungs = LungMasks()  # the current image's lung masks, each with the method that made it
        self.saliency = SaliencyRunner(bridge, self)  # saliency maps in the worker (slow ones cancellable)
        self.prep_cache: dict[str, Any] = {}  # spec json -> Preprocessed
        self.forward_cache: dict[tuple[str, str], Any] = {}  # (model id, spec json) -> ForwardResult
        self.layer_cache: dict[str, list[Any]] = {}
        self.rankings: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
        self.thumbs: dict[tuple[str, str, str], np.ndarray] = {}
        self.last_heatmap: HeatmapView | None = None
        self.untrained: set[str] = set()
        self.auto_strongest = True  # the first heatmap of an image/model shows the strongest channel
        self._pending: set[str] = set()
        self._forward_waiters: dict[tuple[str, str], list[Any]] = {}
        self._rank_waiters: dict[tuple, list[Any]] = {}
        self._good_user_spec: Any = session.spec
        session.events.changed.connect(self._on_session_changed)

    # -- helpers -----------------------------------------------------------------------------
    def loaded(self, model_id: str | None = None) -> Any:
        mid = model_id or self.session.current_model_id
        return self.session.models.get(mid) if mid else None

    def spec_for(self, model_id: str | None = None) -> Any:
        """The model's preprocessing with the user's Pipeline-dock choices: the Session's one rule."""
        return self.session.effective_spec(model_id)

    @staticmethod
    def spec_key(spec: Any) -> str:
        return json.dumps(spec.to_dict(), sort_keys=True)

    def forward_for(self, model_id: str | None = None) -> Any:
        mid = model_id or self.session.current_model_id
        return self.forward_cache.get((mid, self.spec_key(self.spec_for(mid)))) if mid else None

    def activation(self, layer: str | None = None) -> np.ndarray | None:
        fwd, name = self.forward_for(), layer or self.session.layer
        return None if fwd is None or name is None else fwd.activations.get(name)

    def mask_for(self, spec: Any) -> tuple[np.ndarray | None, str | None]:
        return self.lungs.for_spec(spec)

    # -- opening things -------------------------------------------------------------------------
    def open_image(self, source: Any, lung_mask: np.ndarray | None = None) -> None:
        """Open a path or a Radiograph: read + preprocess in the worker, then everything else."""
        self.lungs.reset(lung_mask)
        self.auto_strongest = True
        for cache in (self.prep_cache, self.forward_cache, self.rankings, self.thumbs, self._forward_waiters,
                      self._rank_waiters):
            cache.clear()
        spec = self.spec_for()
        self.bridge.submit("opening image", jobs.run_pipeline, source, spec, *self.mask_for(spec), key="pipeline",
                           on_result=self._image_opened, on_error=self.error.emit)

    def _image_opened(self, res: jobs.PipelineResult) -> None:
        self.session.set_image(res.radiograph)
        self._pipeline_done(res)

    def rerun_pipeline(self) -> None:
        """Preprocess the current image with the current spec (cached per spec)."""
        rad = self.session.radiograph
        if rad is None:
            return
        spec = self.spec_for()
        key = self.spec_key(spec)
        if key in self.prep_cache:
            res = self.prep_cache[key]
            self._pipeline_done(res)
            return
        self.bridge.submit("preprocessing", jobs.run_pipeline, rad, spec, *self.mask_for(spec), key="pipeline",
                           on_result=self._pipeline_done, on_error=self._pipeline_failed)

    def _pipeline_failed(self, message: str) -> None:
        """Show the error and go back to the last settings that worked (what is shown stays)."""
        self.error.emit(message)
        if self.session.spec != self._good_user_spec:
            self.session.spec = self._good_user_spec

    def _pipeline_done(self, res: jobs.PipelineResult) -> None:
        p = res.preprocessed
        self._good_user_spec = self.session.spec
        self.lungs.keep(res)
        self.prep_cache[self.spec_key(p.spec)] = res
        self.session.set_preprocessed(p)
        for w in p.warnings:
            self.message.emit(w)
        self.pipeline_ready.emit(res)
        self.refresh_forward()

    def load_checkpoint(self, path: str, untrained: bool = False) -> None:
        def done(result: tuple[str, Any]) -> None:
            mid, loaded = result
            if untrained or (getattr(loaded, "provenance", None) or {}).get("untrained"):
                self.untrained.add(mid)
            self.auto_strongest = True
            self.session.add_model(mid, loaded)
            self.session.current_model_id = mid
            self.models_changed.emit()

        self.bridge.submit("loading model", jobs.load_model, self.manager, path,
                           on_result=done, on_error=self.error.emit)

    def unload(self, model_id: str) -> None:
        def done(_: Any) -> None:
            self.session.remove_model(model_id)
            for k in [k for k in self.forward_cache if k[0] == model_id]:
                del self.forward_cache[k]
            self.layer_cache.pop(model_id, None)
            self.models_changed.emit()

        self.bridge.submit("unloading model", self.manager.unload, model_id, on_result=done,
                           on_error=self.error.emit)

    # -- forward, layers, ranking, thumbnails ----------------------------------------------------
    def ensure_forward(self, model_id: str, then: Any = None) -> None:
        """Run (or reuse) the forward pass of ``model_id`` on the current image; ``then(fwd)``
        runs when it is there (callbacks of concurrent requests are all kept)."""
        spec = self.spec_for(model_id)
        key = (model_id, self.spec_key(spec))
        if key in self.forward_cache:
            if then:
                then(self.forward_cache[key])
            return
        rad = self.session.radiograph
        if rad is None:
            return
        waiting = self._forward_waiters.get(key)
        if waiting is not None:  # already running: just wait for it too
            if then:
                waiting.append(then)
            return
        self._forward_waiters[key] = [then] if then else []
        cached = self.prep_cache.get(key[1])

        def run(loaded: Any, rad: Any, spec: Any, cached: Any, lungs: tuple[Any, Any], cancel: Any = None,
                progress: Any = None) -> tuple[Any, Any]:
            res = cached
            if res is None:
                res = jobs.run_pipeline(rad, spec, *lungs)
            return res, jobs.forward(loaded, res.preprocessed, cancel)

        def done(out: tuple[Any, Any]) -> None:
            res, fwd = out
            callbacks = self._forward_waiters.pop(key, [])
            if rad is not self.session.radiograph or model_id not in self.session.models:
                return  # stale: the image or the model changed meanwhile
            self.lungs.keep(res)
            self.prep_cache.setdefault(self.spec_key(res.preprocessed.spec), res)
            self.forward_cache[key] = fwd
            self.forward_ready.emit(model_id)
            for cb in callbacks:
                cb(fwd)

        def failed(msg: str) -> None:
            self._forward_waiters.pop(key, None)
            self.message.emit(f"Forward pass of {model_id} cancelled.") if msg == "cancelled" else self.error.emit(msg)

        self.bridge.submit(f"forward pass ({model_id})", run, self.loaded(model_id), rad, spec, cached,
                           (None, None) if cached else self.mask_for(spec), on_result=done, on_error=failed,
                           cancellable=True)

    def refresh_forward(self) -> None:
        mid = self.session.current_model_id
        if mid is None or self.session.preprocessed is None:
            return
        if mid not in self.layer_cache:
            size = int(self.spec_for(mid).input_size)
            self.bridge.submit("listing layers", jobs.layer_list, self.loaded(mid), size,
                               key=f"layers:{mid}", on_result=lambda ls, m=mid: self._layers_done(m, ls),
                               on_error=self.error.emit)
        self.ensure_forward(mid, lambda fwd: self._forward_done(mid))

    def _layers_done(self, mid: str, layers: list[Any]) -> None:
        self.layer_cache[mid] = layers
        self.layers_ready.emit(mid, layers)

    def _forward_done(self, mid: str) -> None:
        if mid != self.session.current_model_id:
            return
        s = self.session
        fwd = self.forward_for(mid)
        if s.preprocessed is not None and self.spec_key(s.preprocessed.spec) == self.spec_key(self.spec_for(mid)):
            s.set_forward(mid, fwd)
        if s.layer is None or s.layer not in fwd.activations:
            from cxr_studio.core.models.layers import deepest_conv

            s.select_layer(deepest_conv(self.loaded(mid).model))
        if self.auto_strongest:  # first look: the strongest channel, as the paper did
            self.auto_strongest = False
            self.strongest()
        else:
            self.refresh_ranking()
            self.refresh_heatmap()
        self.refresh_thumbnails()  # queued after the ranking: the heatmap comes first

    def refresh_layer(self) -> None:
        """Thumbnails and ranking of the current layer, then the heatmap."""
        self.refresh_thumbnails()
        self.refresh_ranking()
        self.refresh_heatmap()

    def _layer_key(self) -> tuple[str, str, str]:
        s = self.session
        return (str(s.current_model_id), str(s.layer), self.spec_key(self.spec_for()))

    def refresh_thumbnails(self) -> None:
        act = self.activation()
        if act is None or act.ndim != 3:
            self.thumbnails_ready.emit(str(self.session.layer), None)
            return
        key = self._layer_key() + (self.session.scale,)
        if key in self.thumbs:
            self.thumbnails_ready.emit(self.session.layer, self.thumbs[key])
            return
        layer = self.session.layer

        def done(t: np.ndarray) -> None:
            self.thumbs[key] = t
            if layer == self.session.layer:
                self.thumbnails_ready.emit(layer, t)

        self.bridge.submit("channel thumbnails", jobs.channel_thumbnails, act, self.session.scale,
                           key="thumbnails", on_result=done, on_error=self.error.emit)

    def refresh_ranking(self, then: Any = None) -> None:
        s = self.session
        act = self.activation()
        if act is None:
            return
        method = s.ranking
        if act.ndim != 3 and method in ("lungs", "region"):
            method = "max"
        if method == "region" and s.region is None:
            self.message.emit("Draw a region on the image to rank channels inside it; ranking by max instead.")
            method = "max"
        p = s.preprocessed
        if method == "lungs" and (p is None or p.lung_mask is None or not p.lung_mask.any()):
            self.message.emit("No lung mask for this image (segmentation failed or is off): ranking by max instead.")
            method = "max"
        key = self._layer_key() + (method, repr(s.region) if method == "region" else "")
        layer = s.layer
        if key in self.rankings:
            self._ranking_done(key, layer, self.rankings[key], [then] if then else [])
            return
        if key in self._rank_waiters:  # the same ranking is being computed: wait for it
            if then:
                self._rank_waiters[key].append(then)
            return
        self._rank_waiters[key] = [then] if then else []

        def done(r: list[tuple[int, float]]) -> None:
            self.rankings[key] = r
            self._ranking_done(key, layer, r, self._rank_waiters.pop(key, []))

        def failed(msg: str) -> None:
            self._rank_waiters.pop(key, None)
            self.error.emit(msg)

        loaded = self.loaded()
        placement = jobs.placement(loaded.model, layer) if loaded is not None else None
        self.bridge.submit("ranking channels", jobs.rank, act, method, p.geometry, p.lung_mask, s.region,
                           placement, on_result=done, on_error=failed)

    def _ranking_done(self, key: tuple, layer: str, r: list[tuple[int, float]], callbacks: list[Any]) -> None:
        if layer != self.session.layer or key[:3] != self._layer_key():
            return  # stale
        self.ranking_ready.emit(layer, r)
        for cb in callbacks:
            cb(r)

    def strongest(self) -> None:
        """Select the top channel under the current ranking method."""
        self.refresh_ranking(then=lambda r: self._set_channel(r[0][0]) if r else None)

    def _set_channel(self, ch: int) -> None:
        if self.session.channel == ch:
            self.refresh_heatmap()
        else:
            self.session.channel = ch

    # -- heatmap ---------------------------------------------------------------------------------
    def refresh_heatmap(self) -> None:
        s = self.session
        mid, p = s.current_model_id, s.preprocessed
        fwd = self.forward_for(mid) if mid else None
        if fwd is None or p is None or s.layer is None:
            return
        act = fwd.activations.get(s.layer)
        if act is None:
            return
        from cxr_studio.core.inspect.views import channel_view, data_mask

        loaded, n = self.loaded(mid), p.geometry.input_size
        placement = jobs.placement(loaded.model, s.layer) if loaded is not None else None
        valid = data_mask(act.shape[1:], placement, n) if act.ndim == 3 else None
        self.saliency.stop()
        if s.method == "activation":
            if act.ndim != 3:
                self.message.emit(f"{s.layer} is fully connected: it has no spatial map. Pick a conv layer.")
                return
            ch = int(s.channel or 0) % act.shape[0]
            m, vrange = channel_view(act, ch, s.scale, placement, n)
            self._show(HeatmapView(m, p.geometry.crop_box, vrange, mid, s.layer, ch, "activation", valid))
            return
        layer, method = s.layer, s.method

        def view(m: np.ndarray, final: bool) -> None:  # partial maps of slow methods are drawn, not kept
            hv = HeatmapView(m, p.geometry.crop_box, (0.0, 1.0), mid, layer, None, method, valid)
            self._show(hv) if final else self.heatmap_ready.emit(hv)

        args = (loaded, p, fwd, layer, s.channel, method, s.class_index, s.scale, s.ranking, s.region)
        self.saliency.submit(args, method, view, self.error.emit)

    def _show(self, hv: HeatmapView) -> None:
        self.last_heatmap = hv
        self.session.set_heatmap(hv)
        self.heatmap_ready.emit(hv)

    # -- session observer -----------------------------------------------------------------------
    def _on_session_changed(self, name: str, value: Any) -> None:
        if name == "current_model_id":
            self.auto_strongest = True  # another model: its own strongest channel (by the current ranking)
        if name in ("channel", "method", "class_index"):
            self.refresh_heatmap()  # cheap for activations: no worker trip, no deferral
        elif name in ("current_model_id", "spec", "layer", "scale", "ranking", "region"):
            # deferred to the event loop: the session may be in the middle of several changes
            if not self._pending:
                from PySide6.QtCore import QTimer

                QTimer.singleShot(0, self._flush)
            self._pending.add(name)

    def _flush(self) -> None:
        names, self._pending = self._pending, set()
        if self.session.radiograph is None:
            return
        if names & {"current_model_id", "spec"}:
            self.rerun_pipeline()
            return
        if "layer" in names:
            self.refresh_layer()
            return
        if "scale" in names:
            self.refresh_thumbnails()
            self.refresh_heatmap()
        if names & {"ranking", "region"}:
            self.refresh_ranking()
            if "region" in names and self.session.method != "activation":
                self.refresh_heatmap()
