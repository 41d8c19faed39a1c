"""Issue 17 item 1: the window fits common screens, --geometry sizes it exactly, saved layouts that no
longer fit are reset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cxr_studio.gui.layout import GeometryError, parse_geometry


def test_parse_geometry() -> None:
    assert parse_geometry("1366x768") == (1366, 768)
    assert parse_geometry(" 1920X1080 ") == (1920, 1080)
    for bad in ("1366", "big", "1366x", "100x100", "-5x400"):
        with pytest.raises(GeometryError, match="--geometry"):
            parse_geometry(bad)


def _inside(w: Any, widget: Any) -> bool:
    from PySide6.QtCore import QPoint

    top_left = widget.mapTo(w, QPoint(0, 0))
    return (0 <= top_left.x() and 0 <= top_left.y() and top_left.x() + widget.width() <= w.width()
            and top_left.y() + widget.height() <= w.height())


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_exact_size_keeps_every_dock_reachable_and_half_for_the_image(qtbot: Any, window: Any,
                                                                      size: tuple[int, int]) -> None:
    w = window
    w.set_exact_size(*size)
    qtbot.waitUntil(lambda: (w.width(), w.height()) == size, timeout=5000)
    qtbot.wait(50)
    assert (w.width(), w.height()) == size
    c = w.centralWidget()
    assert c.width() * c.height() >= 0.5 * size[0] * size[1]
    assert _inside(w, c)
    for d in w.docks:
        if d in (w.compare_dock, w.cohort_dock):  # opened large from the View menu
            assert d.toggleViewAction() in w.menuBar().actions()[1].menu().actions()
            continue
        on_screen = d.isVisible() and not d.visibleRegion().isEmpty()
        assert on_screen or w.tabifiedDockWidgets(d), d.objectName()  # shown, or a tab away
        if on_screen:
            assert _inside(w, d), d.objectName()
    grab = w.grab()
    assert (grab.width(), grab.height()) == size


def test_compare_opens_large(qtbot: Any, window: Any) -> None:
    w = window
    w.set_exact_size(1366, 768)
    from cxr_studio.gui import layout

    layout.show_compare(w)
    qtbot.waitUntil(lambda: w.compare_dock.isVisible(), timeout=5000)
    qtbot.wait(50)
    assert w.compare_dock.height() >= 0.35 * 768
    assert (w.width(), w.height()) == (1366, 768)


def test_saved_layout_that_no_longer_fits_is_reset(qtbot: Any, settings: Any) -> None:
    from PySide6.QtCore import QByteArray, QSize

    from cxr_studio.core.runtime.engine import ModelManager, Worker
    from cxr_studio.core.runtime.session import Session
    from cxr_studio.gui.layout import SIZE_KEY, available
    from cxr_studio.gui.main_window import MainWindow

    settings.set_window_state(QByteArray(b"old geometry"), QByteArray(b"old state"))
    settings.set_value(SIZE_KEY, QSize(5000, 3000))  # saved on a much larger screen
    w = MainWindow(Session(), Worker(), ModelManager("cpu"), settings)
    qtbot.addWidget(w)
    w.show()
    avail = available(w)
    qtbot.wait(50)
    assert w.width() <= avail.width() and w.height() <= avail.height()
    assert settings.window_state() == (None, None)  # forgotten
    w.close()
    # what this window saved fits, so it is restored next time
    assert settings.window_state()[0] is not None
    w2 = MainWindow(Session(), Worker(), ModelManager("cpu"), settings)
    qtbot.addWidget(w2)
    assert w2._restored
    w2.close()


def _screen_config(tmp_path: Path, width: int, height: int) -> Path:
    cfg = tmp_path / f"screen-{width}x{height}.json"
    cfg.write_text(json.dumps({"synchronousWindowSystem": True, "windowFrameMargins": False, "screens": [
        {"name": "s", "x": 0, "y": 0, "width": width, "height": height, "logicalDpi": 96,
         "logicalBaseDpi": 96, "dpr": 1}]}))
    return cfg


@pytest.mark.parametrize("screen", [(1366, 768), (1920, 1080)])
def test_fresh_window_fits_the_screen(tmp_path: Path, screen: tuple[int, int]) -> None:
    """A real start on a screen of that size (offscreen platform configured to it): the screenshot is
    the whole window, no larger than the screen."""
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM=f"offscreen:configfile={_screen_config(tmp_path, *screen)}",
               CXR_STUDIO_SETTINGS=str(tmp_path / "settings.ini"), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "cxr_studio.cli", "--demo", "--screenshot", str(shot)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import cv2

    h, w = cv2.imread(str(shot)).shape[:2]
    assert w <= screen[0] and h <= screen[1]
    assert w >= 0.9 * screen[0] and h >= 0.9 * screen[1]  # maximised on screens up to 1920x1080


def test_geometry_flag_sizes_the_screenshot(tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CXR_STUDIO_SETTINGS=str(tmp_path / "settings.ini"),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "cxr_studio.cli", "--demo", "--geometry", "1366x768",
                        "--screenshot", str(shot)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import cv2

    assert cv2.imread(str(shot)).shape[:2] == (768, 1366)
    bad = subprocess.run([sys.executable, "-m", "cxr_studio.cli", "--geometry", "huge"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--geometry needs WIDTHxHEIGHT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_layer_shapes_stay_whole_in_a_narrow_layers_dock(qtbot: Any, window: Any) -> None:
    """At 1366x768 the Layers dock is ~240 px wide: the type column gives way (elided, tooltip),
    the output shape does not (it was cut to '96x111x')."""
    from types import SimpleNamespace

    window.set_exact_size(1366, 768)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1366, 768), timeout=5000)
    dock = window.layers_dock
    dock.raise_()
    layers = [SimpleNamespace(name="norm1", type="LocalResponseNorm", shape=(96, 111, 111)),
              SimpleNamespace(name="conv5_4", type="Conv2d", shape=(512, 14, 14))]
    dock.show_layers(layers)
    qtbot.wait(50)
    assert 150 < dock.tree.viewport().width() < 300  # the narrow dock of this screen
    header, fm = dock.tree.header(), dock.tree.fontMetrics()
    assert header.sectionSize(2) >= fm.horizontalAdvance("96x111x111")
    assert header.sectionSize(0) >= fm.horizontalAdvance("conv5_4")
    assert header.length() <= dock.tree.viewport().width()  # all three in view, no sideways scrolling
    assert header.sectionSize(1) < fm.horizontalAdvance("LocalResponseNorm")  # the one that gives way
    assert "LocalResponseNorm" in dock.items["norm1"].toolTip(1)
