"""Turns the engine worker's futures into Qt signals delivered on the GUI thread.

`WorkerBridge.submit(label, fn, *args, key=..., on_result=..., on_error=...)` sends ``fn`` to the
`Worker` (one thread owns all torch work); when the future finishes, the callbacks run on the GUI
thread. A result that a newer request with the same key has superseded is dropped, so the screen
always shows the newest request. The bridge also tells the status bar what is running and how long
the last step took.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """One sentence for a person: the exception's message, with its type only when it is not
    one of ours (ValueError subclasses carry sentences already)."""
    msg = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller image or model, or close other models."
    if "out of memory" in msg.lower():
        return f"Out of memory: {msg.splitlines()[0]}"
    if isinstance(exc, (ValueError, OSError)):
        return msg.splitlines()[0] if len(msg) > 300 else msg
    return f"{exc.__class__.__name__}: {msg.splitlines()[0]}"


def is_user_error(exc: BaseException) -> bool:
    """True for what the input caused and its message explains (our own ValueError / OSError
    subclasses, and the system's OSErrors: a missing or unreadable file); False for bugs, which keep
    their traceback in the log."""
    return isinstance(exc, OSError) or (isinstance(exc, ValueError) and type(exc).__module__.startswith("cxr_studio."))


@dataclass
class _Job:
    id: int
    key: str | None
    label: str
    started: float
    on_result: Callable[[Any], None] | None
    on_error: Callable[[str], None] | None
    cancel_event: threading.Event | None = None
    request: Any = None
    extra: dict = field(default_factory=dict)


class WorkerBridge(QObject):
    """Qt face of `cxr_studio.core.runtime.engine.Worker`."""

    _done = Signal(int, object, object)  # job id, result, exception (internal, queued to GUI)
    _progressed = Signal(int, float, str)  # internal, queued to GUI thread
    busy_changed = Signal(str)  # "" when idle, else what is running
    step_finished = Signal(str, float)  # label, seconds
    failed = Signal(str, str)  # label, message (failures of jobs submitted without on_error)
    progress = Signal(str, float, str)  # label, fraction, message

    def __init__(self, worker: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self._jobs: dict[int, _Job] = {}
        self._latest: dict[str, int] = {}
        self._next_local = 0
        self._done.connect(self._on_done)
        self._progressed.connect(self._on_progress)
        self.submitted = 0  # counts submissions (tests and benchmarks read it)
        self._waiting: list[tuple] = []  # submitted before the worker was attached (start-up)

    def attach(self, worker: Any) -> None:
        """The worker, once torch is imported (the window shows before); queued jobs start now."""
        self.worker = worker
        waiting, self._waiting = self._waiting, []
        for job, fn, args, kwargs, cancellable in waiting:
            if job.id in self._jobs:
                self._dispatch(job, fn, args, kwargs, cancellable)

    # -- submitting ------------------------------------------------------------------------
    def submit(
        self,
        label: str,
        fn: Callable[..., Any],
        *args: Any,
        key: str | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        cancellable: bool = False,
        **kwargs: Any,
    ) -> int:
        """Queue ``fn(*args, **kwargs)`` on the worker; returns a job id (for `cancel`)."""
        self.submitted += 1
        self._next_local += 1
        jid = self._next_local
        job = _Job(jid, key, label, time.perf_counter(), on_result, on_error)
        self._jobs[jid] = job
        if key is not None:
            self._latest[key] = jid
        if cancellable:
            job.cancel_event = threading.Event()
            user_fn = fn

            def fn(*a: Any, cancel: Any = None, progress: Any = None, **kw: Any) -> Any:  # noqa: F811
                ev = job.cancel_event
                if cancel is not None:  # the worker's own event: cancel() sets both
                    job.extra["cancel"] = cancel
                    if ev is not None and ev.is_set():
                        cancel.set()
                    ev = cancel
                return user_fn(
                    *a, cancel=ev, progress=lambda f, m="": self._progressed.emit(jid, float(f), str(m)), **kw
                )

        if self.worker is None:  # still starting up: runs when the worker is attached
            self._waiting.append((job, fn, args, kwargs, cancellable))
            self._update_busy()
            return jid
        self._dispatch(job, fn, args, kwargs, cancellable)
        return jid

    def _dispatch(self, job: _Job, fn: Callable[..., Any], args: tuple, kwargs: dict, cancellable: bool) -> None:
        jid, key = job.id, job.key
        try:
            req = self.worker.submit(fn, *args, key=key, cancellable=cancellable, **kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. worker already shut down
            self._jobs.pop(jid, None)
            self._report_error(job, exc)
            return
        job.request = req
        fut: Future = req.future if hasattr(req, "future") else req
        fut.add_done_callback(lambda f, jid=jid: self._emit_done(jid, f))
        self._update_busy()

    def _emit_done(self, jid: int, fut: Future) -> None:
        try:
            if fut.cancelled():
                self._done.emit(jid, None, CancelledError())
                return
            exc = fut.exception()
            self._done.emit(jid, None if exc else fut.result(), exc)
        except RuntimeError:  # the bridge was deleted while the worker finished
            pass

    def cancel(self, jid: int) -> None:
        """Ask a running cancellable job to stop (its future then ends with an error or result)."""
        job = self._jobs.get(jid)
        if job is None:
            return
        if job.cancel_event is not None:
            job.cancel_event.set()
        if job.extra.get("cancel") is not None:
            job.extra["cancel"].set()
        req = job.request
        for attr in ("cancel",):
            f = getattr(req, attr, None)
            if callable(f):
                try:
                    f()
                except Exception:  # noqa: BLE001
                    pass

    def cancellable(self) -> list[int]:
        """Ids of the pending jobs that can be asked to stop."""
        return [j.id for j in self._jobs.values() if j.cancel_event is not None]

    def cancel_all(self) -> int:
        """Ask every cancellable pending job to stop; returns how many were asked."""
        ids = self.cancellable()
        for jid in ids:
            self.cancel(jid)
        return len(ids)

    # -- results (GUI thread) ------------------------------------------------------------------
    def _on_progress(self, jid: int, fraction: float, message: str) -> None:
        job = self._jobs.get(jid)
        if job is not None:
            self.progress.emit(job.label, fraction, message)

    def _on_done(self, jid: int, result: Any, exc: BaseException | None) -> None:
        job = self._jobs.pop(jid, None)
        if job is None:
            return
        superseded = job.key is not None and self._latest.get(job.key) != jid
        if job.key is not None and self._latest.get(job.key) == jid:
            del self._latest[job.key]
        self._update_busy()
        if isinstance(exc, CancelledError) or superseded:
            return
        if exc is not None and exc.__class__.__name__ == "Cancelled":
            self.step_finished.emit(f"{job.label} (cancelled)", time.perf_counter() - job.started)
            if job.on_error:
                job.on_error("cancelled")
            return
        if exc is not None:
            self._report_error(job, exc)
            return
        self.step_finished.emit(job.label, time.perf_counter() - job.started)
        if job.on_result is not None:
            try:
                job.on_result(result)
            except Exception as e:  # noqa: BLE001 - a display bug must not kill the app
                log.exception("Showing the result of %s failed", job.label)
                self.failed.emit(job.label, describe_error(e))

    def _report_error(self, job: _Job, exc: BaseException) -> None:
        msg = describe_error(exc)
        trace = (type(exc), exc, exc.__traceback__)
        if is_user_error(exc):  # a missing file, a model that does not fit: one line, traceback at debug
            log.warning("%s failed: %s", job.label, msg)
            log.debug("%s failed", job.label, exc_info=trace)
        else:
            log.error("%s failed: %s", job.label, msg, exc_info=trace)
        if job.on_error is not None:
            try:
                job.on_error(msg)
            except Exception:  # noqa: BLE001
                log.exception("error handler failed")
        else:  # nobody asked to handle it: the window shows it
            self.failed.emit(job.label, msg)

    def _update_busy(self) -> None:
        labels = sorted({j.label for j in self._jobs.values()})
        self.busy_changed.emit(", ".join(labels))

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet delivered."""
        return len(self._jobs)

    def shutdown(self) -> None:
        """Cancel what is queued and stop the worker thread."""
        for job in list(self._jobs.values()):
            if job.cancel_event is not None:
                job.cancel_event.set()
        self._jobs.clear()
        self._waiting.clear()
        if self.worker is None:
            return
        try:
            self.worker.shutdown(wait=True)
        except TypeError:
            self.worker.shutdown()
