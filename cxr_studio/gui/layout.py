"""Window size and dock layout that fit the screen.

Fresh settings: the window takes at most the screen's available size (maximised on screens up to
1920x1080), the image view keeps at least half of the window: the left column (pipeline | layers |
filters) and the right column (models over heatmap | channels) are tabbed on screens lower than
``TALL_SCREEN`` pixels; the compare dock opens at the bottom, large, when asked for (View menu).
A saved layout is restored only when the window it describes still fits the screen; else it is
reset. ``--geometry WxH`` sizes the window exactly (with the default layout, for screenshots).
"""
from __future__ import annotations

import re
from typing import Any

from PySide6.QtCore import QSize, Qt

MAXIMISE_UP_TO = QSize(1920, 1080)  # screens up to this open maximised
DEFAULT_SIZE = QSize(1500, 950)  # larger screens: this, centred
TALL_SCREEN = 1000  # windows at least this tall stack the side docks; lower ones tab them
SIZE_KEY = "window/size"  # the window size saved with the layout (checked against the screen)


class GeometryError(ValueError):
    """A --geometry value that is not WIDTHxHEIGHT."""


def scrollable(dock: Any) -> None:
    """Put a dock's contents in a frameless scroll area: on a low screen the dock scrolls instead of
    forcing the window taller than the screen."""
    from PySide6.QtWidgets import QFrame, QScrollArea

    inner = dock.widget()
    if inner is None or isinstance(inner, QScrollArea):
        return
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(inner)
    dock.setWidget(area)


def parse_geometry(text: str) -> tuple[int, int]:
    """``"1366x768"`` -> (1366, 768); one clear sentence for anything else."""
    m = re.fullmatch(r"\s*(\d{2,5})\s*[xX]\s*(\d{2,5})\s*", str(text))
    if not m:
        raise GeometryError(f"--geometry needs WIDTHxHEIGHT in pixels, for example 1366x768, not {text!r}.")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 320 or h < 240:
        raise GeometryError(f"--geometry {w}x{h} is too small: the window needs at least 320x240.")
    return w, h


def available(window: Any) -> Any:
    """The available geometry (QRect) of the window's screen, or the primary screen's."""
    from PySide6.QtGui import QGuiApplication

    screen = window.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry()


def fits(size: QSize, avail: Any) -> bool:
    return size.width() <= avail.width() and size.height() <= avail.height()


def restore(window: Any, settings: Any) -> bool:
    """Restore the saved window geometry and dock layout when they fit this screen, else size the
    window for it (and forget the saved layout). Returns True when a saved layout was restored."""
    geom, state = settings.window_state()
    avail = available(window)
    saved = settings.value(SIZE_KEY)
    if geom is not None and isinstance(saved, QSize) and fits(saved, avail):
        window.restoreGeometry(geom)
        if state is not None:
            window.restoreState(state)
        return True
    if geom is not None or state is not None:
        settings.set_value("window/geometry", None)
        settings.set_value("window/state", None)
    default_size(window, avail)
    return False


def default_size(window: Any, avail: Any) -> None:
    w, h = min(DEFAULT_SIZE.width(), avail.width()), min(DEFAULT_SIZE.height(), avail.height())
    window.resize(w, h)
    if avail.width() <= MAXIMISE_UP_TO.width() and avail.height() <= MAXIMISE_UP_TO.height():
        window.setWindowState(window.windowState() | Qt.WindowState.WindowMaximized)
    else:
        window.move(avail.x() + (avail.width() - w) // 2, avail.y() + (avail.height() - h) // 2)


def save(window: Any, settings: Any) -> None:
    settings.set_window_state(window.saveGeometry(), window.saveState())
    settings.set_value(SIZE_KEY, window.size())


def exact_size(window: Any, width: int, height: int) -> None:
    """``--geometry``: exactly this size, not maximised, with the default layout for it."""
    window.setWindowState(Qt.WindowState.WindowNoState)
    arrange(window, height)
    window.resize(width, height)


def arrange(window: Any, height: int | None = None) -> None:
    """The default dock layout for a window ``height`` pixels high (default: its height)."""
    w = window
    h = int(height or w.height())
    size = w.size()  # re-adding docks stacks them for a moment, which may grow the window
    left, right = [w.pipeline_dock, w.layers_dock, w.mosaic_dock], [w.heatmap_dock, w.channels_dock]
    for d in left:
        w.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, d)
    w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, w.models_dock)
    for d in right:
        w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, d)
    w.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, w.compare_dock)
    w.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, w.cohort_dock)
    w.tabifyDockWidget(w.compare_dock, w.cohort_dock)
    for d in w.docks:
        d.setFloating(False)
        d.show()
    if h >= TALL_SCREEN:  # tall: layers over pipeline (filters tabbed), heatmap over channels
        w.splitDockWidget(w.layers_dock, w.pipeline_dock, Qt.Orientation.Vertical)
        w.tabifyDockWidget(w.pipeline_dock, w.mosaic_dock)
        w.splitDockWidget(w.models_dock, w.heatmap_dock, Qt.Orientation.Vertical)
        w.splitDockWidget(w.heatmap_dock, w.channels_dock, Qt.Orientation.Vertical)
    else:  # low: one tab group per side
        w.tabifyDockWidget(w.layers_dock, w.pipeline_dock)
        w.tabifyDockWidget(w.pipeline_dock, w.mosaic_dock)
        w.splitDockWidget(w.models_dock, w.heatmap_dock, Qt.Orientation.Vertical)
        w.tabifyDockWidget(w.heatmap_dock, w.channels_dock)
    w.layers_dock.raise_() if h < TALL_SCREEN else w.pipeline_dock.raise_()
    w.heatmap_dock.raise_()
    w.compare_dock.hide()  # opened large from the View menu
    w.cohort_dock.hide()
    if not w.isMaximized():
        w.resize(size)
    size_docks(window)


def size_docks(window: Any) -> None:
    """Side columns narrow enough that the image view keeps at least half of the window."""
    w = window
    width, height = max(w.width(), 640), max(w.height(), 480)
    left, right = max(220, min(340, int(width * 0.18))), max(260, min(380, int(width * 0.24)))
    H, V = Qt.Orientation.Horizontal, Qt.Orientation.Vertical
    w.resizeDocks([w.layers_dock, w.models_dock], [left, right], H)
    body = height - 60  # menu and status bars
    if height >= TALL_SCREEN:
        w.resizeDocks([w.layers_dock, w.pipeline_dock], [int(body * 0.4), int(body * 0.6)], V)
        w.resizeDocks([w.models_dock, w.heatmap_dock, w.channels_dock],
                      [int(body * 0.3), int(body * 0.28), int(body * 0.42)], V)
    else:
        w.resizeDocks([w.models_dock, w.heatmap_dock], [int(body * 0.42), int(body * 0.58)], V)
    for d in (w.compare_dock, w.cohort_dock):
        if not d.isHidden():
            w.resizeDocks([d], [int(height * 0.45)], V)


def show_compare(window: Any) -> None:
    show_bottom(window, window.compare_dock)


def show_bottom(window: Any, d: Any) -> None:
    """Open a bottom dock (compare, cohort) large: almost half of the window's height."""
    d.show()
    d.raise_()
    if not d.isFloating():
        window.resizeDocks([d], [int(window.height() * 0.45)], Qt.Orientation.Vertical)
