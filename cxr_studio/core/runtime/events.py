"""A tiny, Qt-free signal: ``connect`` / ``disconnect`` / ``emit``.

The GUI observes the core's state (`Session`) through these. Exceptions raised by one callback are
logged and do not stop the others. ``blocked()`` suppresses emission for the duration of a block
(used when a widget pushes a value into the model it is itself listening to).
"""
from __future__ import annotations

import logging
import threading
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

Callback = Callable[..., Any]


class Signal:
    """An observer list. Callbacks are called in connection order with the emitted arguments."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._callbacks: list[Callback] = []
        self._blocked = 0
        self._lock = threading.Lock()

    def connect(self, callback: Callback) -> Callback:
        """Add ``callback`` (once; connecting it again does nothing). Returns it, so this also
        works as a decorator."""
        if not callable(callback):
            raise TypeError(f"Signal {self.name!r}: can only connect callables, got {callback!r}")
        with self._lock:
            if callback not in self._callbacks:
                self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callback | None = None) -> None:
        """Remove ``callback`` (all callbacks when None). Removing one that is not connected is
        a no-op."""
        with self._lock:
            if callback is None:
                self._callbacks.clear()
            elif callback in self._callbacks:
                self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        """Call every connected callback with ``args``; a failing callback is logged and skipped."""
        if self._blocked:
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb(*args)
            except Exception:  # noqa: BLE001 - one observer must not break the others
                log.exception("Error in a callback of signal %r (%r)", self.name, cb)

    @contextmanager
    def blocked(self) -> Iterator["Signal"]:
        """Suppress emission inside the ``with`` block (nests)."""
        self._blocked += 1
        try:
            yield self
        finally:
            self._blocked -= 1

    @property
    def is_blocked(self) -> bool:
        return self._blocked > 0

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, {len(self._callbacks)} callbacks)"


class SignalGroup:
    """Named signals as attributes (``group.threshold``), plus ``changed(name, value)`` that an owner
    emits for every field; ``blocked()`` silences all of them at once."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self.changed = Signal("changed")
        for name in self.names:
            if name == "changed" or not name.isidentifier() or hasattr(type(self), name):
                raise ValueError(f"{name!r} cannot be the name of a signal in a group.")
            setattr(self, name, Signal(name))

    def signal(self, name: str) -> Signal:
        """The signal called ``name`` (``"changed"`` included)."""
        if name != "changed" and name not in self.names:
            raise ValueError(f"There is no signal called {name!r}; known: {', '.join(self.names)}.")
        return getattr(self, name)

    def all(self) -> list[Signal]:
        return [self.changed] + [getattr(self, n) for n in self.names]

    @contextmanager
    def blocked(self) -> Iterator["SignalGroup"]:
        """Block every signal of the group inside the ``with`` block (nests)."""
        with ExitStack() as stack:
            for sig in self.all():
                stack.enter_context(sig.blocked())
            yield self
