"""The app's look: qdarkstyle's dark or light style (the window and the app both switch it)."""
from __future__ import annotations

import logging

log = logging.getLogger("cxr_studio.gui")


def apply_theme(name: str) -> None:
    """qdarkstyle's dark or light style on the running QApplication."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return
    try:
        import qdarkstyle

        if name == "light":
            from qdarkstyle.light.palette import LightPalette

            app.setStyleSheet(qdarkstyle.load_stylesheet(qt_api="pyside6", palette=LightPalette))
        else:
            app.setStyleSheet(qdarkstyle.load_stylesheet(qt_api="pyside6"))
    except Exception as e:  # noqa: BLE001 - the app works without the style
        log.warning("theme %s unavailable: %s", name, e)
