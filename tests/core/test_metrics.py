"""Localisation metrics on synthetic maps: a Gaussian blob inside or outside a mask."""
from __future__ import annotations

import numpy as np
import pytest

from cxr_studio.core.inspect.metrics import energy_inside, iou_at, localisation_report, pointing_game


def blob(cx: float, cy: float, sigma: float = 6.0, shape: tuple[int, int] = (80, 100)) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)).astype(np.float32)


def disc(cx: float, cy: float, r: float, shape: tuple[int, int] = (80, 100)) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r**2


def test_blob_inside_the_mask_scores_well():
    mask = disc(30, 40, 12)
    m = blob(30, 40)
    assert pointing_game(m, mask)
    assert energy_inside(m, mask) == pytest.approx(1 - np.exp(-(12**2) / (2 * 6.0**2)), rel=0.02)  # 2-D Gaussian mass within r
    iou = iou_at(m, mask, 0.5)
    # the blob's half-maximum disc has radius sigma*sqrt(2 ln 2) ~ 7.06 px against a 12 px mask
    assert iou == pytest.approx((7.06 / 12) ** 2, rel=0.1)


def test_blob_outside_the_mask_scores_badly():
    mask = disc(30, 40, 12)
    m = blob(80, 40)
    assert not pointing_game(m, mask)
    assert energy_inside(m, mask) < 0.01
    assert iou_at(m, mask, 0.5) == 0.0


def test_exact_values_on_small_arrays():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    m = np.zeros((4, 4))
    m[0, 0], m[3, 3] = 3.0, 1.0
    assert pointing_game(m, mask)
    assert energy_inside(m, mask) == pytest.approx(0.75)
    assert iou_at(m, mask, 1.0) == pytest.approx(1 / 5)  # pred {(0,0),(3,3)}, mask 4 px
    assert energy_inside(np.zeros((4, 4)), mask) == 0.0
    neg = m.copy()
    neg[3, 0] = -10.0  # negative values count as zero
    assert energy_inside(neg, mask) == pytest.approx(0.75)


def test_ties_need_every_maximum_inside():
    mask = np.zeros((4, 4), bool)
    mask[0, :] = True
    m = np.zeros((4, 4))
    m[0, 1] = m[0, 3] = 1.0
    assert pointing_game(m, mask)
    m[2, 2] = 1.0
    assert not pointing_game(m, mask)
    assert not pointing_game(np.ones((4, 4)), mask)  # a flat map does not score


def test_report_collects_everything():
    mask = disc(30, 40, 12)
    rep = localisation_report(blob(32, 41), mask, threshold=0.5)
    assert rep["pointing_game"] is True and rep["peak_xy"] == (32, 41)
    assert rep["energy_inside"] == pytest.approx(energy_inside(blob(32, 41), mask))
    assert rep["iou"] == pytest.approx(iou_at(blob(32, 41), mask, 0.5))
    assert 0 < rep["area_above_threshold"] < rep["mask_area"] < 1


def test_bad_input_is_a_clear_error():
    mask = disc(30, 40, 12)
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(np.zeros((10, 10)), mask)
    with pytest.raises(ValueError, match="mask is empty"):
        energy_inside(blob(30, 40), np.zeros((80, 100), bool))
    with pytest.raises(ValueError, match="NaN"):
        iou_at(np.full((80, 100), np.nan), mask, 0.5)
    with pytest.raises(ValueError, match="2-D"):
        localisation_report(np.zeros((2, 80, 100)), mask)
