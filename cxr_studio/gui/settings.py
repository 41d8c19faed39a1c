"""Persistent user settings (QSettings): theme, window layout, recent files, last view settings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "cxr-studio"
APPLICATION = "CXR Studio"
MAX_RECENT = 10
VIEW_VERSION = 2  # view settings saved before 2 always held threshold 0 (the old default): not restored
ENV_FILE = "CXR_STUDIO_SETTINGS"  # an INI file used instead of the platform store (tests, portable)


class Settings:
    """Typed access to QSettings. ``path`` (or ``$CXR_STUDIO_SETTINGS``) selects an INI file."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = path or os.environ.get(ENV_FILE)
        if path:
            self._q = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self._q = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)

    # -- generic ---------------------------------------------------------------------------
    def value(self, key: str, default: Any = None, type_: type | None = None) -> Any:
        v = self._q.value(key, default)
        if v is None or type_ is None:
            return v
        try:
            if type_ is bool:
                return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
            return type_(v)
        except (TypeError, ValueError):
            return default

    def set_value(self, key: str, value: Any) -> None:
        self._q.setValue(key, value)

    def sync(self) -> None:
        self._q.sync()

    # -- theme -----------------------------------------------------------------------------
    @property
    def theme(self) -> str:
        t = self.value("ui/theme", "dark", str)
        return t if t in ("dark", "light") else "dark"

    @theme.setter
    def theme(self, name: str) -> None:
        self.set_value("ui/theme", "light" if name == "light" else "dark")

    # -- window layout -----------------------------------------------------------------------
    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        g, s = self._q.value("window/geometry"), self._q.value("window/state")
        return (g if isinstance(g, QByteArray) else None, s if isinstance(s, QByteArray) else None)

    def set_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self._q.setValue("window/geometry", geometry)
        self._q.setValue("window/state", state)

    # -- recent files ------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        v = self._q.value("files/recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(p) for p in (v or []) if p]

    def add_recent_file(self, path: str | os.PathLike) -> list[str]:
        p = str(Path(path).resolve())
        files = [p] + [f for f in self.recent_files() if f != p]
        files = files[:MAX_RECENT]
        self._q.setValue("files/recent", files)
        return files

    def clear_recent_files(self) -> None:
        self._q.setValue("files/recent", [])

    # -- last view settings ------------------------------------------------------------------
    def view_settings(self) -> dict[str, Any]:
        """Last threshold / opacity / colormap / method / scale / ranking (missing keys omitted)."""
        out: dict[str, Any] = {}
        for key, t in (("threshold", float), ("opacity", float), ("colormap", str), ("method", str),
                       ("scale", str), ("ranking", str)):
            v = self.value(f"view/{key}", None, t)
            if v is not None:
                out[key] = v
        if self.value("view/version", 1, int) < VIEW_VERSION:
            out.pop("threshold", None)
        return out

    def set_view_settings(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self._q.setValue(f"view/{k}", v)
        self._q.setValue("view/version", VIEW_VERSION)

    @property
    def last_dir(self) -> str:
        return self.value("files/last_dir", str(Path.home()), str)

    @last_dir.setter
    def last_dir(self, d: str) -> None:
        self._q.setValue("files/last_dir", str(d))

    @property
    def last_export_dir(self) -> str:
        """The folder exported to last (the image folder until the first export)."""
        return self.value("files/last_export_dir", self.last_dir, str)

    @last_export_dir.setter
    def last_export_dir(self, d: str) -> None:
        self._q.setValue("files/last_export_dir", str(d))
