"""The validation behind `Session`'s fields (session.py): `SessionError` and the small checks its
setters use, each raising a sentence a person understands. No Qt, no torch."""
from __future__ import annotations

from typing import Any, Callable


class SessionError(ValueError):
    """An invalid value for a session field."""


USER_SPEC_KEYS = ("segmentation", "clahe", "clahe_clip", "clahe_tiles")  # what the Pipeline dock overrides


def same(a: Any, b: Any) -> bool:
    """Equality that never raises (numpy arrays compare by identity)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - ambiguous truth value of arrays etc.
        return False


def unit(value: Any, what: str) -> float:
    """A number in 0..1."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SessionError(f"{what} must be a number between 0 and 1, got {value!r}.") from None
    if not (0.0 <= v <= 1.0):
        raise SessionError(f"{what} must be between 0 and 1, got {value!r}.")
    return v


def choice(value: Any, options: tuple[str, ...], what: str) -> str:
    """One of ``options``."""
    if value not in options:
        raise SessionError(f"Unknown {what} {value!r}; choose one of {', '.join(options)}.")
    return str(value)


def field(name: str, validate: Callable[[Any], Any], doc: str) -> Any:
    """A property reading ``self._v[name]`` whose setter validates, then emits on change
    (through the owner's ``_set``)."""

    def fget(self: Any) -> Any:
        return self._v[name]

    def fset(self: Any, value: Any) -> None:
        self._set(name, validate(value))

    return property(fget, fset, doc=doc)
