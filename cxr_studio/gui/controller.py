"""Glue between the `Session` (state), the worker (torch work) and the widgets.

The controller only schedules work: it reacts to session changes by sending jobs (`gui.jobs`) to the
worker through the `WorkerBridge`, writes what came back into the Session (its `ViewCache`: preprocessing
per spec, forward passes per model and spec, rankings, thumbnails, lung masks; the heatmap shown), and
publishes results as Qt signals the docks and the central view draw. Every heatmap comes from
`core.inspect.views`; one channel's map of a cached forward pass is computed on the GUI thread
(`views.channel_heatmap`) so a channel switch needs no worker trip; threshold / opacity / colormap
never reach the controller's compute paths at all. What it keeps itself is scheduling state: the
callbacks waiting for a running job, the changes not yet acted on, the last spec that worked.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from cxr_studio.core.runtime.lung_masks import LungMasks
from cxr_studio.core.runtime.view_cache import spec_key

from . import jobs
from .bridge import WorkerBridge
from .saliency_runner import SaliencyRunner

if TYPE_CHECKING:  # views and models import torch: they are imported where used, so that the window
    from cxr_studio.core.inspect.views import HeatmapResult  # is built and shown before torch loads


class Controller(QObject):
    pipeline_ready = Signal(object)  # jobs.PipelineResult
    forward_ready = Signal(str)  # model id
    layers_ready = Signal(str, object)  # model id, list[LayerInfo]
    ranking_ready = Signal(str, object)  # layer, [(channel, score)]
    thumbnails_ready = Signal(str, object)  # layer, (C, t, t, 4) uint8
    heatmap_ready = Signal(object)  # views.HeatmapResult (partial maps of slow methods too)
    models_changed = Signal()
    message = Signal(str)  # a warning / information for the status bar
    error = Signal(str)  # one clear sentence for a dialog

    def __init__(self, session: Any, bridge: WorkerBridge, manager: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.bridge = bridge
        self.manager = manager
        self.cache = session.cache  # the Session's: results are written there
        self.saliency = SaliencyRunner(bridge, self)  # saliency maps in the worker (slow ones cancellable)
        self.untrained: set[str] = set()
        self.auto_strongest = True  # the first heatmap of an image/model shows the strongest channel
        self._pending: set[str] = set()
        self._forward_waiters: dict[tuple[str, str], list[Any]] = {}
        self._rank_waiters: dict[tuple, list[Any]] = {}
        self._good_user_spec: Any = session.spec
        self._opening = False  # an image is being opened: reruns for the image shown would supersede it
        session.events.changed.connect(self._on_session_changed)

    # -- helpers -----------------------------------------------------------------------------
    def loaded(self, model_id: str | None = None) -> Any:
        mid = model_id or self.session.current_model_id
        return self.session.models.get(mid) if mid else None

    def activation(self, layer: str | None = None) -> np.ndarray | None:
        fwd, name = self.session.cached_forward(), layer or self.session.layer
        return None if fwd is None or name is None else fwd.activations.get(name)

    # -- opening things -------------------------------------------------------------------------
    def open_image(self, source: Any, lung_mask: np.ndarray | None = None) -> None:
        """Open a path or a Radiograph: read + preprocess in the worker, then everything else."""
        self.auto_strongest = True
        self._opening = True
        self.saliency.stop()  # a slow map of the old image is not wanted any more
        spec = self.session.effective_spec()
        self.bridge.submit("opening image", jobs.run_pipeline, source, spec, *LungMasks(lung_mask).for_spec(spec),
                           key="pipeline", on_result=lambda res: self._image_opened(res, lung_mask),
                           on_error=self._open_failed)

    def _open_failed(self, message: str) -> None:
        self._opening = False
        self.error.emit(message)

    def _image_opened(self, res: jobs.PipelineResult, lung_mask: np.ndarray | None) -> None:
        self._opening = False
        self._forward_waiters.clear()  # jobs for the old image queued while this one opened: nobody waits
        self._rank_waiters.clear()  # for them now (their results are dropped when they come)
        self.session.set_image(res.radiograph, lung_mask)  # a new image: the Session's cache starts again
        if spec_key(res.preprocessed.spec) != spec_key(self.session.effective_spec()):  # the model or the Pipeline dock
            self.cache.keep_pipeline(res)  # changed while it opened: preprocess it as they say now
            self.rerun_pipeline()
            return
        self._pipeline_done(res)

    def rerun_pipeline(self) -> None:
        """Preprocess the current image with the current spec (cached per spec)."""
        rad = self.session.radiograph
        if rad is None or self._opening:  # the image being opened is preprocessed with the spec of then
            return
        spec = self.session.effective_spec()
        res = self.cache.pipeline_for(spec)
        if res is not None:
            self._pipeline_done(res)
            return
        self.bridge.submit("preprocessing", jobs.run_pipeline, rad, spec, *self.cache.mask_for(spec), key="pipeline",
                           on_result=self._pipeline_done, on_error=self._pipeline_failed)

    def _pipeline_failed(self, message: str) -> None:
        """Show the error and go back to the last settings that worked (what is shown stays)."""
        self.error.emit(message)
        if self.session.spec != self._good_user_spec:
            self.session.spec = self._good_user_spec

    def _pipeline_done(self, res: jobs.PipelineResult) -> None:
        p = res.preprocessed
        self._good_user_spec = self.session.spec
        self.cache.keep_pipeline(res)
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
            self.session.remove_model(model_id)  # its cached results go with it
            self.models_changed.emit()

        self.bridge.submit("unloading model", self.manager.unload, model_id, on_result=done,
                           on_error=self.error.emit)

    # -- forward, layers, ranking, thumbnails ----------------------------------------------------
    def ensure_forward(self, model_id: str, then: Any = None) -> None:
        """Run (or reuse) the forward pass of ``model_id`` on the current image; ``then(fwd)``
        runs when it is there (callbacks of concurrent requests are all kept)."""
        spec = self.session.effective_spec(model_id)
        key = (model_id, spec_key(spec))
        cached_fwd = self.cache.forward_for(model_id, spec)
        if cached_fwd is not None:
            if then:
                then(cached_fwd)
            return
        rad = self.session.radiograph
        if rad is None:
            return
        waiting = self._forward_waiters.get(key)
        if waiting is not None:  # already running: just wait for it too
            if then:
                waiting.append(then)
            return
        waiters = self._forward_waiters[key] = [then] if then else []
        cached = self.cache.pipeline_for(spec)

        def run(loaded: Any, rad: Any, spec: Any, cached: Any, lungs: tuple[Any, Any], cancel: Any = None,
                progress: Any = None) -> tuple[Any, Any]:
            res = cached
            if res is None:
                res = jobs.run_pipeline(rad, spec, *lungs)
            return res, jobs.forward(loaded, res.preprocessed, cancel)

        def done(out: tuple[Any, Any]) -> None:
            res, fwd = out
            self._stop_waiting(self._forward_waiters, key, waiters)
            if rad is not self.session.radiograph or model_id not in self.session.models:
                return  # stale: the image or the model changed meanwhile
            self.cache.keep_pipeline(res)
            self.cache.keep_forward(model_id, spec, fwd)
            self.forward_ready.emit(model_id)
            for cb in waiters:
                cb(fwd)

        def failed(msg: str) -> None:
            self._stop_waiting(self._forward_waiters, key, waiters)
            self.message.emit(f"Forward pass of {model_id} cancelled.") if msg == "cancelled" else self.error.emit(msg)

        self.bridge.submit(f"forward pass ({model_id})", run, self.loaded(model_id), rad, spec, cached,
                           (None, None) if cached else self.cache.mask_for(spec), on_result=done, on_error=failed,
                           cancellable=True)

    def refresh_forward(self) -> None:
        mid = self.session.current_model_id
        if mid is None or self.session.preprocessed is None:
            return
        if mid not in self.cache.layers:
            size = int(self.session.effective_spec(mid).input_size)
            self.bridge.submit("listing layers", jobs.layer_list, self.loaded(mid), size,
                               key=f"layers:{mid}", on_result=lambda ls, m=mid: self._layers_done(m, ls),
                               on_error=self.error.emit)
        self.ensure_forward(mid, lambda fwd: self._forward_done(mid))

    def _layers_done(self, mid: str, layers: list[Any]) -> None:
        self.cache.layers[mid] = layers
        self.layers_ready.emit(mid, layers)

    def _forward_done(self, mid: str) -> None:
        if mid != self.session.current_model_id:
            return
        s = self.session
        fwd = self.session.cached_forward(mid)
        if s.preprocessed is not None and spec_key(s.preprocessed.spec) == spec_key(self.session.effective_spec(mid)):
            s.set_forward(mid, fwd)
        if s.layer is None or s.layer not in fwd.activations:
            from cxr_studio.core.models.layers import deepest_conv  # torch: see the top

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
        return (str(s.current_model_id), str(s.layer), spec_key(self.session.effective_spec()))

    def refresh_thumbnails(self) -> None:
        act = self.activation()
        if act is None or act.ndim != 3:
            self.thumbnails_ready.emit(str(self.session.layer), None)
            return
        key = self._layer_key() + (self.session.scale,)
        if key in self.cache.thumbnails:
            self.thumbnails_ready.emit(self.session.layer, self.cache.thumbnails[key])
            return
        layer, rad = self.session.layer, self.session.radiograph

        def done(t: np.ndarray) -> None:
            if rad is not self.session.radiograph:
                return  # another image was opened meanwhile
            self.cache.thumbnails[key] = t
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
        if key in self.cache.rankings:
            self._ranking_done(key, layer, self.cache.rankings[key], [then] if then else [])
            return
        if key in self._rank_waiters:  # the same ranking is being computed: wait for it
            if then:
                self._rank_waiters[key].append(then)
            return
        waiters = self._rank_waiters[key] = [then] if then else []
        rad = s.radiograph

        def done(r: list[tuple[int, float]]) -> None:
            self._stop_waiting(self._rank_waiters, key, waiters)
            if rad is not self.session.radiograph:
                return  # another image was opened meanwhile: this ranking is of the old one
            self.cache.rankings[key] = r
            self._ranking_done(key, layer, r, waiters)

        def failed(msg: str) -> None:
            self._stop_waiting(self._rank_waiters, key, waiters)
            self.error.emit(msg)

        loaded = self.loaded()
        placement = jobs.placement(loaded.model, layer) if loaded is not None else None
        self.bridge.submit("ranking channels", jobs.rank, act, method, p.geometry, p.lung_mask, s.region,
                           placement, on_result=done, on_error=failed)

    @staticmethod
    def _stop_waiting(table: dict, key: Any, waiters: list[Any]) -> None:
        """A job is over: forget its waiters (not those of a newer job under the same key)."""
        if table.get(key) is waiters:
            del table[key]

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
        fwd = self.session.cached_forward(mid) if mid else None
        if fwd is None or p is None or s.layer is None:
            return
        act = fwd.activations.get(s.layer)
        if act is None:
            return
        from cxr_studio.core.inspect.views import HeatmapResult, channel_heatmap  # torch: see the top

        loaded = self.loaded(mid)
        self.saliency.stop()
        if s.method == "activation":
            if act.ndim != 3:
                self.message.emit(f"{s.layer} is fully connected: it has no spatial map. Pick a conv layer.")
                return
            placement = jobs.placement(loaded.model, s.layer) if loaded is not None else None
            ch = int(s.channel or 0) % act.shape[0]
            self._show(channel_heatmap(act, ch, s.scale, placement, p.geometry, layer=s.layer, model_id=mid,
                                       ranking_method=s.ranking))
            return
        layer, method, rad = s.layer, s.method, s.radiograph

        def view(res: Any, final: bool) -> None:  # partial maps (arrays) of slow methods are drawn, not kept
            if rad is not self.session.radiograph:
                return  # asked for while another image opened: a map of the old one
            if final:
                self._show(dataclasses.replace(res, model_id=mid))
            else:
                self.heatmap_ready.emit(HeatmapResult(res, p.geometry, layer=layer, method=method, model_id=mid))

        args = (loaded, p, fwd, layer, s.channel, method, s.class_index, s.scale, s.ranking, s.region)
        self.saliency.submit(args, method, view, self.error.emit)

    def _show(self, heatmap: HeatmapResult) -> None:
        self.session.set_heatmap(heatmap)
        self.heatmap_ready.emit(heatmap)

    # -- session observer -----------------------------------------------------------------------
    def _on_session_changed(self, name: str, value: Any) -> None:
        if name == "current_model_id":
            self.auto_strongest = True  # another model: its own strongest channel (by the current ranking)
        if name in ("channel", "method", "class_index"):
            self.refresh_heatmap()  # cheap for activations: no worker trip, no deferral
        elif name in ("current_model_id", "spec", "layer", "scale", "ranking", "region"):
            # deferred to the event loop: the session may be in the middle of several changes
            if not self._pending:
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
