"""Saliency heatmaps (Grad-CAM, Score-CAM, occlusion, ...) in the worker, for the controller.

The slow methods (`method_names.SLOW_METHODS`) run cancellable (the status bar's Cancel, Esc) and,
where the method allows (occlusion row by row, integrated gradients as a coarser sum), show partial
maps as they go, at most every `PARTIAL_EVERY_S` seconds. A new request cancels a slow job still
running, and partial maps of an older request are dropped.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, Signal

from cxr_studio.core.inspect.method_names import LABELS, SLOW_METHODS

from . import jobs

PARTIAL_EVERY_S = 0.3


def throttled(fn: Callable[[np.ndarray], None], every_s: float | None = None) -> Callable[[np.ndarray], None]:
    """``fn`` called at most every ``every_s`` seconds (default `PARTIAL_EVERY_S`); the first call always."""
    last = [-float("inf")]
    gap = PARTIAL_EVERY_S if every_s is None else float(every_s)

    def call(m: np.ndarray) -> None:
        now = time.monotonic()
        if now - last[0] >= gap:
            last[0] = now
            fn(m)

    return call


class SaliencyRunner(QObject):
    _partial = Signal(int, object)  # request token, (N, N) partial map (emitted from the worker thread)

    def __init__(self, bridge: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.token = 0
        self.slow_job: int | None = None
        self._view: Callable[[Any, bool], None] | None = None
        self._partial.connect(self._on_partial)

    def stop(self) -> None:
        """Forget the running request: a slow job is cancelled, late partial maps are dropped."""
        self.token += 1
        if self.slow_job is not None:
            self.bridge.cancel(self.slow_job)
            self.slow_job = None

    def submit(self, args: tuple, method: str, view: Callable[[Any, bool], None],
               on_error: Callable[[str], None]) -> None:
        """Compute ``jobs.heatmap(*args)``; ``view(partial, False)`` draws partial maps (an (N, N) array on
        the model input), ``view(result, True)`` the final `views.HeatmapResult`."""
        self.stop()
        token, slow = self.token, method in SLOW_METHODS
        self._view = view
        kw: dict[str, Any] = {}
        if slow:
            kw["partial"] = throttled(lambda m: self._partial.emit(token, m))

        def done(res: Any) -> None:
            if token != self.token:
                return  # a newer request (or `stop`) replaced this one: its map is not wanted
            self.slow_job = None
            view(res, True)

        jid = self.bridge.submit(LABELS.get(method, method), jobs.heatmap, *args, key="heatmap", cancellable=slow,
                                 on_result=done, on_error=on_error, **kw)
        if slow:
            self.slow_job = jid

    def _on_partial(self, token: int, m: np.ndarray) -> None:
        if token == self.token and self._view is not None:
            self._view(m, False)
