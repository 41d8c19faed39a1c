"""Issue 17 item 3: compare as large linked panes with the prediction over each, the session's
threshold / opacity / colormap, a link toggle and a difference view."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cxr_studio.gui.docks.compare_dock import grid_shape


def test_grid_shape_gives_the_largest_panes() -> None:
    assert grid_shape(4, 1400, 350, 1.0) == (1, 4)  # a wide bottom dock: one row
    assert grid_shape(4, 400, 1600, 1.0) == (4, 1)  # a tall side dock: one column
    assert grid_shape(4, 800, 800, 1.0) == (2, 2)
    assert grid_shape(1, 800, 300, 1.2) == (1, 1)


@pytest.fixture
def compared(qtbot: Any, loaded_window: Any, tiny_checkpoint: Path) -> Any:
    from cxr_studio.gui import layout

    w = loaded_window
    w.set_exact_size(1366, 768)
    w.controller.load_checkpoint(str(tiny_checkpoint))  # a second model
    qtbot.waitUntil(lambda: len(w.session.models) == 2, timeout=30000)
    layout.show_compare(w)
    d = w.compare_dock
    d.refresh()
    qtbot.waitUntil(lambda: len(d.rows) == 2 and len(d.panes) == 4, timeout=60000)
    qtbot.wait(50)
    return w


def test_panes_are_large_and_titled_with_the_prediction(qtbot: Any, compared: Any) -> None:
    d = compared.compare_dock
    assert all("p(abnormal) = " in p.title for p in d.panes)
    assert len(d.viewboxes) == 4 and d._grid == (1, 4)  # side by side in the wide bottom dock
    assert min(vb.width() for vb in d.viewboxes) > 200
    compared.session.threshold = 0.6
    assert all((np.asarray(i.lut)[1:153, 3] == 0).all() and np.asarray(i.lut)[154, 3] == 255 for i in d.heat_items)
    assert all(np.asarray(i.lut)[0, 3] == 0 for i in d.heat_items)  # no data: transparent
    compared.session.opacity = 0.25
    assert all(i.opacity() == pytest.approx(0.25) for i in d.heat_items)
    d.show_combo.setCurrentIndex(d.show_combo.findData("gradcam"))
    assert len(d.panes) == 2 and all("Grad-CAM" in p.title for p in d.panes)


def test_zoom_and_pan_are_linked_and_can_be_unlinked(qtbot: Any, compared: Any) -> None:
    d = compared.compare_dock
    a, b = d.viewboxes[0], d.viewboxes[3]
    a.setRange(xRange=(40, 120), yRange=(60, 140), padding=0)
    qtbot.wait(20)
    ra, rb = np.array(a.viewRange()), np.array(b.viewRange())
    np.testing.assert_allclose(ra, rb, atol=1.0)
    assert ra[0][1] - ra[0][0] < 200  # zoomed in
    d.link.setChecked(False)
    before = np.array(b.viewRange())
    a.setRange(xRange=(0, 60), yRange=(0, 60), padding=0)
    qtbot.wait(20)
    np.testing.assert_allclose(np.array(b.viewRange()), before, atol=1e-6)
    d.link.setChecked(True)  # linked again: one view (panes of slightly different widths differ by a pixel)
    qtbot.wait(20)
    ra, rb = np.array(a.viewRange()), np.array(b.viewRange())
    np.testing.assert_allclose(ra.mean(axis=1), rb.mean(axis=1), atol=1.0)
    np.testing.assert_allclose(ra, rb, atol=0.02 * (ra[0][1] - ra[0][0]))


def test_difference_of_two_panes(qtbot: Any, compared: Any) -> None:
    d = compared.compare_dock
    d.diff.setChecked(True)
    assert len(d.panes) == 5 and d.panes[-1].difference and len(d.diff_items) == 1
    d.diff_b.setCurrentIndex(1)  # model 1's channel - model 1's Grad-CAM
    d.diff_b.activated.emit(1)
    a, b, diff = d.panes[0], d.panes[1], d.panes[-1]
    np.testing.assert_allclose(diff.map_input, (a.map_input - b.map_input + 1) / 2, atol=1e-6)
    compared.session.threshold = 0.2
    lut = np.asarray(d.diff_items[0].lut)
    assert lut[128, 3] == 0 and lut[255, 3] == 255 and lut[0, 3] == 0  # small differences clear
    d.diff.setChecked(False)
    assert len(d.panes) == 4


def test_guided_vs_unguided_is_one_click(qtbot: Any, loaded_window: Any, tiny_checkpoint: Path, tmp_path: Path,
                                         monkeypatch: Any) -> None:
    import shutil

    from cxr_studio.core.models import shipped

    w = loaded_window
    twin = tmp_path / "cxrnet-tb-unguided.pt"
    shutil.copy(tiny_checkpoint, twin)
    models = [shipped.ShippedModel(tiny_checkpoint, "TB", "radiographs", "NLM", 0.9, 0.5),
              shipped.ShippedModel(twin, "TB unguided", "radiographs", "NLM", 0.85, 0.5)]
    monkeypatch.setattr(shipped, "shipped_models", lambda: models)
    n_before = len(w.session.models)
    asked = w.compare_dock.compare_shipped()
    assert asked == [str(tiny_checkpoint), str(twin)]
    qtbot.waitUntil(lambda: len(w.session.models) == n_before + 1, timeout=60000)  # the loaded one is not reloaded
    assert w.compare_dock.isVisible()
    qtbot.waitUntil(lambda: len(w.compare_dock.panes) >= 2 and w.bridge.pending == 0, timeout=120000)
    titles = " ".join(p.title for p in w.compare_dock.panes)
    assert "unguided" in titles
