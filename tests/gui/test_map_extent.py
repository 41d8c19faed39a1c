"""The dotted frame around a layer map's extent: drawn where the layer's cells lie (a map from an
unpadded network stops short of the crop's edges), absent for maps with values everywhere, and
only on the original radiograph."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxr_studio.gui.outlines import extent_path


def test_extent_path_is_the_valid_box_through_the_crop() -> None:
    valid = np.zeros((10, 10), bool)
    valid[2:8, 3:9] = True
    xs, ys = extent_path(valid, (100, 50, 200, 250))  # crop 100 rows x 200 columns: 10 x 20 per input pixel
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (50 + 3 * 20, 50 + 9 * 20, 100 + 2 * 10, 100 + 8 * 10)
    assert xs[0] == xs[-1] and ys[0] == ys[-1]  # closed
    assert extent_path(None, (0, 0, 10, 10)) is None
    assert extent_path(np.ones((4, 4), bool), (0, 0, 10, 10)) is None
    assert extent_path(np.zeros((4, 4), bool), (0, 0, 10, 10)) is None


def test_the_frame_follows_the_heatmap(qtbot: Any, window: Any, tmp_path: Path, tiny_checkpoint: Path) -> None:
    from cxr_studio.core.imaging.png import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    path = tmp_path / "p.png"
    write_png(path, make_phantom(seed=11, size=256, abnormal=True).image)
    w = window
    w.auto_default_model = False
    w.open_image(path)
    w.controller.load_checkpoint(str(tiny_checkpoint))
    qtbot.waitUntil(lambda: w.session.heatmap is not None and w.bridge.pending == 0, timeout=60000)
    hv, v = w.session.heatmap, w.view
    assert hv.valid is not None and not hv.valid.all()  # an unpadded net's layer map
    assert v.map_extent.isVisible()
    xs, ys = v.map_extent.data
    y0, x0, y1, x1 = hv.crop_box
    assert x0 < xs.min() < xs.max() < x1 and y0 < ys.min() < ys.max() < y1  # inside the crop, short of its edges
    v.show_stage("clahe", np.zeros((64, 64), np.float32))
    assert not v.map_extent.isVisible()  # pipeline stages show no overlay
    v.set_image(v.pixels)
    assert v.map_extent.isVisible()
    v.set_heatmap(hv.map_input, hv.crop_box, valid=None)  # a map with values everywhere (input methods)
    assert not v.map_extent.isVisible()
    v.set_heatmap(None)
    assert not v.map_extent.isVisible() and v.map_extent.data is None
