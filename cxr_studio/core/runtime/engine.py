"""Device choice, the worker thread that owns all torch work, and the manager of loaded models.

- :func:`choose_device`: CUDA when available, then Apple MPS, else the CPU; a named device overrides.
- :class:`Worker`: one daemon thread runs queued requests in order. A newer request with the same
  ``key`` replaces a pending one (whose future is cancelled) and asks a running one to stop when it is
  cancellable. Failures come back through the request's future; the thread keeps running.
- :class:`ModelManager`: holds several loaded checkpoints on one device; it runs in the caller's
  thread (the GUI calls it through the worker). CUDA out-of-memory becomes :class:`DeviceMemoryError`.
"""
from __future__ import annotations

import collections
import gc
import itertools
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from cxr_studio.core.cancel import Cancelled  # noqa: F401  (re-exported: callers catch engine.Cancelled)
from cxr_studio.core.models.checkpoint import LoadedCheckpoint, load_checkpoint
from cxr_studio.core.runtime.device import (  # noqa: F401  (re-exported: callers import them from here)
    DeviceError,
    DeviceMemoryError,
    _is_oom,
    choose_device,
    describe_device,
    oom_guard,
)
from cxr_studio.core.models.importers import open_model

log = logging.getLogger(__name__)


class UnknownModelError(ValueError):
    """No loaded model has that id."""


# -- the worker ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class Request:
    """One queued call. ``future`` gets the result (its ``request_id`` attribute is ``id``)."""

    id: int
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict[str, Any]
    key: Any = None
    cancellable: bool = False
    future: Future = field(default_factory=Future)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[float, str], None] | None = None
    progress: tuple[float, str] = (0.0, "")
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> bool:
        """Cancel if still pending (True), else ask a running cancellable job to stop (False)."""
        self.cancel_event.set()
        return self.future.cancel()

    def _report(self, fraction: float, message: str = "") -> None:
        self.progress = (float(fraction), str(message))
        if self.on_progress is not None:
            try:
                self.on_progress(float(fraction), str(message))
            except Exception:  # noqa: BLE001 - a display callback must not break the job
                log.exception("progress callback failed")


class Worker:
    """One daemon thread that runs submitted callables in order (see the module docstring)."""

    def __init__(self, name: str = "cxr-studio-worker") -> None:
        self._pending: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._running: Request | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        key: Any = None,
        cancellable: bool = False,
        on_done: Callable[[Request], None] | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        **kwargs: Any,
    ) -> Request:
        """Queue ``fn(*args, **kwargs)``. With ``cancellable=True`` it also gets ``cancel``
        (a ``threading.Event``) and ``progress`` (``callable(fraction, message)``) keyword arguments.
        ``on_done(request)`` runs when the request finishes or is cancelled (in the worker thread, or
        in the thread that cancelled it)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("The worker has shut down; no more requests are accepted.")
            req = Request(next(self._ids), fn, args, kwargs, key=key, cancellable=cancellable,
                          on_progress=on_progress)
            req.future.request_id = req.id  # type: ignore[attr-defined]
            if on_done is not None:
                req.future.add_done_callback(lambda _f, r=req: on_done(r))
            replaced: list[Request] = []
            if key is not None:
                replaced = [r for r in self._pending if r.key == key]
                for r in replaced:
                    self._pending.remove(r)
                running = self._running
                if running is not None and running.key == key and running.cancellable:
                    running.cancel_event.set()
            self._pending.append(req)
            self._cond.notify_all()  # the worker and any wait_idle() callers share the condition
        for r in replaced:  # outside the lock: done callbacks may submit again
            r.cancel_event.set()
            r.future.cancel()
        return req

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:  # closed and drained
                    return
                req = self._pending.popleft()
                self._running = req
            try:
                self._run(req)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    @staticmethod
    def _run(req: Request) -> None:
        if not req.future.set_running_or_notify_cancel():
            return
        kwargs = dict(req.kwargs)
        if req.cancellable:
            kwargs["cancel"] = req.cancel_event
            kwargs["progress"] = req._report
        try:
            result = req.fn(*req.args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the future
            req.future.set_exception(exc)
            if not isinstance(exc, Exception):
                log.warning("request %s raised %s", req.id, type(exc).__name__)
        else:
            req.future.set_result(result)

    @property
    def pending(self) -> int:
        """Requests queued and not started."""
        with self._cond:
            return len(self._pending)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._running is None, timeout)

    def shutdown(self, wait: bool = True, cancel_pending: bool = True) -> None:
        """Stop accepting requests; cancel the queued ones (or let them run with
        ``cancel_pending=False``), ask a running cancellable one to stop, and join when ``wait``."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending) if cancel_pending else []
            if cancel_pending:
                self._pending.clear()
            if self._running is not None:
                self._running.cancel_event.set()
            self._cond.notify_all()
        for r in dropped:
            r.cancel_event.set()
            r.future.cancel()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


# -- the model manager ----------------------------------------------------------------------------------


def _model_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


class ModelManager:
    """Loaded checkpoints by id, all on one device (chosen by :func:`choose_device`)."""

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = choose_device(device)
        self._models: collections.OrderedDict[str, LoadedCheckpoint] = collections.OrderedDict()
        self._lock = threading.RLock()
        # absolute path -> open_model options (--arch, --classes...) for files opened by path later
        self.open_options: dict[str, dict[str, Any]] = {}

    @property
    def models(self) -> collections.OrderedDict[str, LoadedCheckpoint]:
        """Model id -> LoadedCheckpoint, in loading order (a copy)."""
        with self._lock:
            return collections.OrderedDict(self._models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model_id: str) -> LoadedCheckpoint:
        try:
            return self._models[model_id]
        except KeyError:
            raise UnknownModelError(
                f"No model {model_id!r} is loaded (loaded: {', '.join(self._models) or 'none'})."
            ) from None

    def _new_id(self, base: str) -> str:
        mid, n = base, 2
        while mid in self._models:
            mid, n = f"{base}-{n}", n + 1
        return mid

    def load(
        self,
        path: str | os.PathLike,
        arch: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        model_id: str | None = None,
        **options: Any,
    ) -> str:
        """Load a model file onto this manager's device; returns its id (the file stem, made unique).

        Any file ``models.importers.open_model`` reads (checkpoints, state dicts with ``arch``,
        TorchScript, exported programs); ``options`` (``classes``, ``input_size``, ``preset``,
        ``multi_label``) and those set for this path in ``open_options`` (the command line's
        ``--arch ...`` flags) say how to read a file that does not describe itself."""
        opts = {**self.open_options.get(os.path.abspath(os.fspath(path)), {}), **options}
        if arch is not None:
            opts["arch"] = arch
        opts = {k: v for k, v in opts.items() if v is not None}
        loaded = open_model(path, arch_kwargs=arch_kwargs, device="cpu", **opts)
        return self.add(loaded, model_id=model_id or Path(path).stem)

    def add(self, loaded: LoadedCheckpoint, model_id: str | None = None) -> str:
        """Take an already loaded checkpoint (moved to this device, eval mode); returns its id."""
        with oom_guard(f"moving {loaded.arch} ({_model_bytes(loaded.model) / 2**20:.0f} MiB) to the device",
                       self.device):
            loaded.model.to(self.device)
        loaded.model.eval()
        with self._lock:
            mid = self._new_id(model_id or loaded.path.stem)
            self._models[mid] = loaded
        return mid

    def unload(self, model_id: str) -> None:
        """Forget a model and free its memory."""
        with self._lock:
            loaded = self.get(model_id)
            del self._models[model_id]
        if self.device.type != "cpu":  # frees device memory even if someone still holds `loaded`
            loaded.model.to("cpu")
        del loaded
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def unload_all(self) -> None:
        for mid in list(self._models):
            self.unload(mid)

    def memory_report(self) -> dict[str, Any]:
        """The device (``describe_device``) and, per model, its arch, parameter count and bytes."""
        with self._lock:
            items = list(self._models.items())
        models = {
            mid: {
                "arch": ld.arch,
                "path": str(ld.path),
                "parameters": sum(p.numel() for p in ld.model.parameters()),
                "bytes": _model_bytes(ld.model),
            }
            for mid, ld in items
        }
        return {
            "device": describe_device(self.device),
            "models": models,
            "models_bytes": sum(m["bytes"] for m in models.values()),
        }
