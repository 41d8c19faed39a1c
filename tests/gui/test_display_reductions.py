"""The reductions the app does on a full-size radiograph before drawing: the pipeline thumbnails and
the traced mask outlines. Both take shortcuts on big images (a strided read, a whole-factor area
mean); these tests hold them to what the exact computation draws."""
from __future__ import annotations

import cv2
import numpy as np

from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.render import to_uint8
from cxr_studio.gui.jobs import _resize, thumbnail
from cxr_studio.gui.outlines import OUTLINE_MAX, outline_path


def _big_phantom(h: int = 3100, w: int = 2600) -> tuple[np.ndarray, np.ndarray]:
    ph = make_phantom(3, size=512, abnormal=True)
    px = cv2.resize(ph.image, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(ph.lung_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return px.astype(np.float32), mask


def test_thumbnail_of_a_big_radiograph_matches_the_full_area_resize() -> None:
    px, _ = _big_phantom()
    t = thumbnail(px, 112)
    exact = to_uint8(_resize(px, t.shape[1], t.shape[0]))
    assert t.shape == exact.shape == (112, 94) and t.dtype == np.uint8
    diff = np.abs(t.astype(int) - exact.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 20  # only sharp phantom edges differ
    small = px[:200, :150]  # too small for the strided read: exactly the area resize
    assert np.array_equal(thumbnail(small, 112), to_uint8(_resize(small, 84, 112)))


def test_outline_of_a_big_mask_lies_on_its_boundary_and_leaves_the_mask_alone() -> None:
    _, mask = _big_phantom()
    before = mask.copy()
    x, y = outline_path(mask)
    assert np.array_equal(mask, before)
    ok = ~np.isnan(x)
    assert ok.sum() > 200 and np.isnan(x).sum() >= 2  # both lungs, NaN-separated
    xi = np.clip(np.round(x[ok]).astype(int), 0, mask.shape[1] - 1)
    yi = np.clip(np.round(y[ok]).astype(int), 0, mask.shape[0] - 1)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    k = -(-max(mask.shape) // OUTLINE_MAX)
    assert np.maximum(outside[yi, xi], inside[yi, xi]).max() <= k  # within one reduced pixel
    # a rectangle whose sides are not multiples of the factor is traced on its true edges
    box = np.zeros((1601, 1203), bool)
    box[101:700, 53:600] = True
    bx, by = outline_path(box)
    assert abs(np.nanmin(bx) - 52.5) <= 1.5 and abs(np.nanmax(bx) - 599.5) <= 1.5
    assert abs(np.nanmin(by) - 100.5) <= 1.5 and abs(np.nanmax(by) - 699.5) <= 1.5
