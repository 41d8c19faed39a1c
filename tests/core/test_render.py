"""Colormap lookup tables, threshold-to-alpha, overlay compositing, tiling."""
from __future__ import annotations

import numpy as np
import pytest

from cxr_studio.core import render
from cxr_studio.core.render import RenderError


@pytest.mark.parametrize("name", render.COLORMAPS)
def test_lut_shape_dtype_opaque(name: str) -> None:
    lut = render.colormap_lut(name)
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert (lut[:, 3] == 255).all()
    assert not lut.flags.writeable  # shared table cannot be corrupted by a caller


def test_jet_endpoints_and_landmarks() -> None:
    lut = render.colormap_lut("jet").astype(int)
    # dark blue -> dark red. MATLAB's jet(256) starts at (0, 0, 0.515625) -> 131 and ends at
    # (0.5, 0, 0) -> 128 (MATLAB's table is not symmetric; we follow it exactly).
    assert np.abs(lut[0, :3] - [0, 0, 128]).max() <= 4
    assert tuple(lut[0, :3]) == (0, 0, 131)
    assert np.abs(lut[255, :3] - [128, 0, 0]).max() <= 1
    # plateaus where jet.m puts them: pure blue, cyan, yellow, red (0-based rows)
    assert tuple(lut[31, :3]) == (0, 0, 255) and tuple(lut[32, :3]) == (0, 4, 255)
    assert tuple(lut[95, :3]) == (0, 255, 255) and tuple(lut[96, :3]) == (4, 255, 251)
    assert tuple(lut[159, :3]) == (255, 255, 0) and tuple(lut[160, :3]) == (255, 251, 0)
    assert tuple(lut[223, :3]) == (255, 0, 0)


def test_matlab_jet_small_tables_match_known_values() -> None:
    # jet(64) row 1 is (0, 0, 0.5625) and row 64 (0.5, 0, 0) in MATLAB; jet(4) is
    # [0 0 1; 0 1 1; 1 1 0; 1 0 0]... for m=4: n=1 -> blue, cyan, yellow, red
    j64 = render.matlab_jet(64)
    assert np.allclose(j64[0], [0, 0, 0.5625]) and np.allclose(j64[-1], [0.5, 0, 0])
    assert np.allclose(render.matlab_jet(4), [[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])
    j = render.matlab_jet(256)
    # piecewise linear: second differences vanish except at the few knots
    knots = np.count_nonzero(np.abs(np.diff(j, 2, axis=0)) > 1e-9)
    assert knots <= 12


def test_perceptual_maps_match_matplotlib() -> None:
    mpl = pytest.importorskip("matplotlib")
    for name in ("viridis", "inferno"):
        ref = np.round(np.asarray(mpl.colormaps[name].colors) * 255)
        assert np.abs(render.colormap_lut(name)[:, :3].astype(int) - ref).max() <= 1


def test_gray_is_identity() -> None:
    lut = render.colormap_lut("gray")
    assert (lut[:, 0] == np.arange(256)).all() and (lut[:, 0] == lut[:, 2]).all()


def test_unknown_colormap_is_a_clear_error() -> None:
    with pytest.raises(RenderError, match="Unknown colormap 'hot'"):
        render.colormap_lut("hot")
    assert issubclass(RenderError, ValueError)


def test_threshold_lut_alpha() -> None:
    lut = render.colormap_lut("jet")
    t = render.threshold_lut(lut, 0.5)
    idx = np.arange(256)
    assert (t[idx / 255 < 0.5, 3] == 0).all()
    assert (t[idx / 255 >= 0.5, 3] == 255).all()
    assert t[127, 3] == 0 and t[128, 3] == 255  # 127/255 = 0.498, 128/255 = 0.502
    assert (t[:, :3] == lut[:, :3]).all()  # colours untouched
    assert (lut[:, 3] == 255).all()  # original not modified
    assert (render.threshold_lut(lut, 0.0)[:, 3] == 255).all()
    assert (render.threshold_lut(lut, 1.0)[:, 3] == 0).sum() == 255  # only index 255 survives
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(RenderError, match="threshold"):
            render.threshold_lut(lut, bad)


def test_apply_lut_rounds_to_nearest_index() -> None:
    lut = render.colormap_lut("gray")
    m = np.array([[0.0, 0.5 / 255 - 1e-4, 0.5 / 255 + 1e-4, 1.0], [np.nan, -3.0, 7.0, 0.5]])
    rgba = render.apply_lut(m, lut)
    assert rgba.shape == (2, 4, 4) and rgba.dtype == np.uint8
    assert rgba[0, :, 0].tolist() == [0, 0, 1, 255]
    assert rgba[1, :, 0].tolist() == [0, 0, 255, 128]  # 127.5 rounds half up
    assert render.lut_index(np.array([np.inf, -np.inf])).tolist() == [255, 0]
    assert render.lut_index(np.zeros((0, 5))).shape == (0, 5)
    big = np.linspace(0, 1, 600_000, dtype=np.float32).reshape(600, 1000)[:, ::3]  # chunks, strided
    assert (render.lut_index(big) == np.floor(big * np.float32(255) + np.float32(0.5))).all()


def test_overlay_known_pixels() -> None:
    gray = np.array([[0.0, 1.0, 0.2, 0.6]], dtype=np.float32)
    heat = np.array([[1.0, 0.0, 0.2, 0.6]], dtype=np.float32)
    out = render.overlay(gray, heat, "jet", threshold=0.3, opacity=0.5)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    jet = render.colormap_lut("jet").astype(float)
    # pixel 0: dark red (128,0,0) blended half over black
    assert out[0, 0].tolist() == [64, 0, 0]
    # pixel 1: heat 0 is below the threshold -> untouched white
    assert out[0, 1].tolist() == [255, 255, 255]
    # pixel 2: heat 0.2 < 0.3 -> transparent, gray 0.2 -> 51
    assert out[0, 2].tolist() == [51, 51, 51]
    # pixel 3: heat 0.6 -> index 153, blended with gray 153
    expect = np.rint(jet[153, :3] * 0.5 + 153 * 0.5)
    assert out[0, 3].tolist() == expect.astype(int).tolist()
    # opacity 0 -> the grayscale image, opacity 1 above the threshold -> the pure colour
    assert (render.overlay(gray, heat, "jet", 0.0, 0.0) == render.to_uint8(gray)[..., None]).all()
    full = render.overlay(gray, heat, "jet", 0.0, 1.0)
    assert (full[0] == render.colormap_lut("jet")[render.lut_index(heat[0]), :3]).all()


def test_overlay_validates_inputs() -> None:
    g = np.zeros((4, 4), np.float32)
    with pytest.raises(RenderError, match="same shape"):
        render.overlay(g, np.zeros((4, 5), np.float32))
    with pytest.raises(RenderError, match="opacity"):
        render.overlay(g, g, opacity=2.0)
    with pytest.raises(RenderError, match="colormap"):
        render.overlay(g, g, colormap="nope")


def test_tile_maps_layout() -> None:
    maps = [np.full((2, 3), i, np.float32) for i in range(5)]
    mosaic = render.tile_maps(maps, cols=2, gap=1, fill=-1)
    assert mosaic.shape == (3 * 2 + 2, 2 * 3 + 1)
    assert mosaic[0, 0] == 0 and mosaic[0, 4] == 1 and mosaic[3, 0] == 2 and mosaic[6, 4] == -1
    assert (mosaic[2, :] == -1).all() and (mosaic[:, 3] == -1).all()
    assert render.tile_maps(maps).shape == (2 * 2 + 1, 3 * 3 + 2)  # ceil(sqrt(5)) = 3 columns
    with pytest.raises(RenderError):
        render.tile_maps([np.zeros((2, 2)), np.zeros((3, 3))])
    with pytest.raises(RenderError):
        render.tile_maps([])


def test_pyqtgraph_shows_the_same_colours(qapp) -> None:
    """The GUI recipe in render's docstring gives the same RGBA as apply_lut (screen == export)."""
    pg = pytest.importorskip("pyqtgraph")
    rng = np.random.default_rng(0)
    heat = rng.random((37, 53)).astype(np.float32)
    heat[0, :5] = [0.0, 1.0, 0.5 / 255, 254.5 / 255, 0.5]
    lut = render.threshold_lut(render.colormap_lut("jet"), 0.25)
    expected = render.apply_lut(heat, lut)

    def shown(image: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
        item = pg.ImageItem(axisOrder="row-major")
        item.setImage(image, levels=levels, lut=lut, autoLevels=False)
        item.render()
        qimg = item.qimage.convertToFormat(pg.QtGui.QImage.Format.Format_RGBA8888)
        arr = pg.functions.ndarray_from_qimage(qimg).copy()
        return arr.reshape(heat.shape + (4,))

    assert (shown(render.lut_index(heat), render.INDEX_LEVELS) == expected).all()
    # a float map with FLOAT_LEVELS too (random values: no exact float32 ties at half-indices)
    heat_f = rng.random((37, 53)).astype(np.float32)
    heat_f[0, :3] = [0.0, 1.0, 0.5]
    got = shown(heat_f, render.FLOAT_LEVELS)
    assert (got == render.apply_lut(heat_f, lut)).all()


def test_overlay_matches_per_pixel_formula_on_random_images() -> None:
    rng = np.random.default_rng(3)
    gray = rng.random((300, 1100)).astype(np.float32)  # > one chunk of pixels
    heat = rng.random((300, 1100)).astype(np.float32)
    for cmap, t, op in [("jet", 0.3, 0.7), ("viridis", 0.0, 1.0), ("gray", 0.9, 0.25)]:
        lut = render.threshold_lut(render.colormap_lut(cmap), t)
        idx = render.lut_index(heat)
        a = lut[idx, 3].astype(np.float64) / 255 * op
        g8 = render.to_uint8(gray).astype(np.float64)
        ref = lut[idx, :3].astype(np.float64) * a[..., None] + (g8 * (1 - a))[..., None]
        got = render.overlay(gray, heat, cmap, t, op).astype(np.float64)
        assert np.abs(got - ref).max() <= 0.5 + 1e-3  # correctly rounded (float32 ties aside)


def test_overlay_box_leaves_outside_untouched() -> None:
    rng = np.random.default_rng(5)
    gray = rng.random((40, 60)).astype(np.float32)
    heat = np.zeros((40, 60), np.float32)  # 0 -> dark blue at threshold 0
    out = render.overlay(gray, heat, "jet", 0.0, 0.8, box=(5, 10, 30, 50))
    g8 = render.to_uint8(gray)
    inside = render.overlay(gray[5:30, 10:50], heat[5:30, 10:50], "jet", 0.0, 0.8)
    assert (out[5:30, 10:50] == inside).all()
    assert (out[:5] == g8[:5, :, None]).all() and (out[:, 50:] == g8[:, 50:, None]).all()
    assert not (out[5:30, 10:50] == g8[5:30, 10:50, None]).all()  # the box is tinted
    with pytest.raises(RenderError, match="does not lie inside"):
        render.overlay(gray, heat, box=(0, 0, 41, 60))
