"""Issue 17 item 2: window/level of the radiograph by right-drag, reset by double right-click, presets
for 8- and 16-bit files, shown in the status bar; display only (the model input never changes)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cxr_studio.gui import window_level as wl


def _mouse(widget: Any, kind: Any, pos: Any, button: Any, buttons: Any) -> None:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    p = QPointF(pos)
    ev = QMouseEvent(kind, p, QPointF(widget.mapToGlobal(p.toPoint())), button, buttons,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, ev)


def right_drag(qtbot: Any, view: Any, dx: int, dy: int) -> None:
    from PySide6.QtCore import QEvent, QPoint, Qt

    vp = view.graphics.viewport()
    start = QPoint(vp.width() // 2, vp.height() // 2)
    R, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    _mouse(vp, QEvent.Type.MouseButtonPress, start, R, R)
    for k in range(1, 6):
        _mouse(vp, QEvent.Type.MouseMove, start + QPoint(dx * k // 5, dy * k // 5), none, R)
        qtbot.wait(5)
    _mouse(vp, QEvent.Type.MouseButtonRelease, start + QPoint(dx, dy), R, none)


def double_right_click(view: Any) -> None:
    from PySide6.QtCore import QEvent, QPoint, Qt

    vp = view.graphics.viewport()
    at = QPoint(vp.width() // 3, vp.height() // 3)
    R, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    _mouse(vp, QEvent.Type.MouseButtonPress, at, R, R)
    _mouse(vp, QEvent.Type.MouseButtonRelease, at, R, none)
    _mouse(vp, QEvent.Type.MouseButtonDblClick, at, R, R)
    _mouse(vp, QEvent.Type.MouseButtonRelease, at, R, none)


def test_right_drag_changes_the_display_window_not_the_model_input(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    v = w.view
    p = w.session.preprocessed
    model_input = p.model_input.copy()
    forward_calls = w.bridge.submitted
    top = v._display_top  # 255 or 65535 by the file's bit depth
    assert v.window == wl.Window() and tuple(v.base.levels) == pytest.approx((0, top))
    right_drag(qtbot, v, 120, 60)  # right: wider; down: higher level
    lo, hi = v.base.levels
    assert hi - lo > top and (lo + hi) / 2 > top / 2
    assert v.window.width > 1.0 and v.window.center > 0.5
    assert "W/L" in w.wl_label.text()
    # display only: the same preprocessing, the same model input, no new work for the worker
    assert w.session.preprocessed is p
    np.testing.assert_array_equal(p.model_input, model_input)
    assert w.bridge.submitted == forward_calls
    right_drag(qtbot, v, -200, -100)  # narrower and lower
    assert v.window.width < 1.0 and v.window.center < 0.5
    double_right_click(v)
    assert v.window == wl.Window() and tuple(v.base.levels) == pytest.approx((0, top))
    assert "(full)" in w.wl_label.text()


def test_presets_from_the_status_bar(qtbot: Any, loaded_window: Any) -> None:
    w = loaded_window
    combo = w.wl_preset
    names = [combo.itemText(i) for i in range(1, combo.count())]
    assert names == list(wl.PRESETS)
    windows = {}
    for i, name in enumerate(names, start=1):
        combo.activated.emit(i)
        windows[name] = w.view.window
        assert f"({name})" in w.wl_label.text() and combo.currentIndex() == 0
    assert windows["full"] == wl.Window()
    assert all(windows[n].width < 1.0 for n in ("lung", "mediastinum", "bone"))
    assert windows["lung"].center < windows["mediastinum"].center < windows["bone"].center


def test_sixteen_bit_images_keep_their_depth_and_show_stored_units(qtbot: Any, window: Any, phantom: Any) -> None:
    from cxr_studio.core.imaging.radiograph import Radiograph

    v = window.view
    px = phantom.radiograph().pixels
    meta = {"format": "DICOM", "bit_depth": 12, "window": {"center": 2000.0, "width": 3000.0}}
    v.set_image(px, meta=meta)
    assert v.base.image.dtype == np.uint16
    v.reset_window()
    assert window.wl_label.text().startswith("W/L 4095/2048 (full); DICOM VOI 2000.0/3000.0")
    v.apply_preset("bone")
    lo, hi = v.base.levels
    assert 0 < lo < hi <= 65535 and hi - lo < 0.5 * 65535
    v.set_image(Radiograph(px.copy(), {"bit_depth": 8}).pixels, meta={"bit_depth": 8})
    assert v.base.image.dtype == np.uint8 and v.window == wl.Window()  # a new image starts at full


def test_presets_follow_the_lungs_when_known() -> None:
    from cxr_studio.core.phantoms.phantom import make_phantom

    ph = make_phantom(4, size=256)
    px = ph.radiograph().pixels
    lung = wl.preset("lung", px, ph.lung_mask)
    inside = px[ph.lung_mask]
    lo, hi = lung.levels
    assert lo == pytest.approx(np.percentile(inside, 1), abs=0.02)
    assert hi == pytest.approx(np.percentile(inside, 99), abs=0.02)
    with pytest.raises(ValueError, match="Unknown window preset"):
        wl.preset("brain", px)
    assert wl.Window(0.5, 0.0).width > 0  # never a zero width
    assert wl.Window().dragged(0, 0) == wl.Window()
