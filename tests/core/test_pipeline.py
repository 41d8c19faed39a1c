"""Preprocessing pipeline: spec validation, stages, geometry round trips."""
from __future__ import annotations

import numpy as np
import pytest

from cxr_studio.core.pipeline import (
    Geometry,
    PreprocessSpec,
    apply_clahe,
    lung_crop_box,
    preprocess,
)
from cxr_studio.core.imaging.radiograph import Radiograph


def _image(h: int = 300, w: int = 240, seed: int = 0) -> Radiograph:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    px = 0.5 + 0.3 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + 0.05 * rng.standard_normal((h, w))
    return Radiograph(np.clip(px, 0, 1).astype(np.float32))


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), bool)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_spec_round_trip_and_validation():
    spec = PreprocessSpec(input_size=224, normalization="imagenet", clahe_clip=3.0)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="segmentation"):
        PreprocessSpec(segmentation="magic")
    with pytest.raises(ValueError, match="channels"):
        PreprocessSpec(channels=2)
    with pytest.raises(ValueError, match="Unknown preprocessing setting"):
        PreprocessSpec.from_dict({"input_sise": 3})
    with pytest.raises(ValueError, match="preset"):
        PreprocessSpec.preset("nope")
    assert PreprocessSpec.preset("torchvision").input_size == 224


def test_stages_shapes_and_ranges():
    rg = _image()
    mask = _mask(300, 240, (50, 40, 250, 200))
    spec = PreprocessSpec(intermediate_size=128, input_size=64, crop_margin=0.0)
    p = preprocess(rg, spec, lung_mask=mask)
    assert p.geometry.crop_box == (50, 40, 250, 200)
    assert p.roi.shape == (200, 160)
    assert p.resized.shape == (128, 128) and p.enhanced.shape == (128, 128)
    assert p.display_input.shape == (64, 64)
    assert p.model_input.shape == (3, 64, 64) and p.model_input.dtype == np.float32
    assert 0.0 <= p.display_input.min() and p.display_input.max() <= 1.0
    assert np.array_equal(p.model_input[0], p.model_input[2])
    assert list(p.stages()) == ["original", "lung mask", "roi", "resized", "clahe", "model input"]
    t = p.tensor()
    assert tuple(t.shape) == (1, 3, 64, 64)


def test_normalisation_imagenet_and_single_channel():
    rg = _image()
    p = preprocess(rg, PreprocessSpec(segmentation="none", normalization="imagenet", input_size=32))
    expected_r = (p.display_input - 0.485) / 0.229
    assert np.allclose(p.model_input[0], expected_r, atol=1e-5)
    p1 = preprocess(rg, PreprocessSpec(segmentation="none", channels=1, normalization="center", input_size=32))
    assert p1.model_input.shape == (1, 32, 32)
    assert np.allclose(p1.model_input[0], (p1.display_input - 0.5) / 0.5, atol=1e-5)


def test_crop_margin_and_clipping():
    mask = _mask(300, 240, (100, 100, 200, 140))
    assert lung_crop_box(mask, (300, 240), 0.1) == (90, 96, 210, 144)
    assert lung_crop_box(_mask(300, 240, (0, 0, 300, 240)), (300, 240), 0.5) == (0, 0, 300, 240)
    assert lung_crop_box(None, (300, 240), 0.1) == (0, 0, 300, 240)


def test_empty_mask_falls_back_to_whole_image_with_warning():
    rg = _image()
    p = preprocess(rg, PreprocessSpec(input_size=32), lung_mask=np.zeros((300, 240), bool))
    assert p.geometry.crop_box == (0, 0, 300, 240)
    assert any("whole image" in w for w in p.warnings)


def test_mask_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match"):
        preprocess(_image(), PreprocessSpec(), lung_mask=np.ones((10, 10), bool))


def test_blank_outside_zeroes_non_lung_pixels():
    rg = Radiograph(np.full((100, 100), 0.8, np.float32))
    mask = _mask(100, 100, (10, 10, 90, 50))
    spec = PreprocessSpec(blank_outside=True, crop_margin=0.0, clahe=False, intermediate_size=80, input_size=80)
    p = preprocess(rg, spec, lung_mask=mask)
    assert p.roi.shape == (80, 40)
    assert np.allclose(p.roi, 0.8)  # crop is entirely inside the mask
    mask2 = mask.copy()
    mask2[10:90, 10:20] = False  # hole on the left of the box
    mask2[10:90, 10] = True  # keep the box edge
    p2 = preprocess(rg, spec, lung_mask=mask2)
    assert p2.roi[:, 1:10].max() == 0.0 and p2.roi[:, 20:].min() == pytest.approx(0.8)


@pytest.mark.parametrize("box", [(0, 0, 300, 240), (37, 11, 251, 199), (100, 60, 140, 230)])
def test_points_round_trip_between_original_and_model_input(box):
    geo = Geometry(original_size=(300, 240), crop_box=box, intermediate_size=1024, input_size=227)
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(box[1], box[3] - 1, 50), rng.uniform(box[0], box[2] - 1, 50)], axis=1)
    back = geo.input_to_original(geo.original_to_input(pts))
    assert np.allclose(back, pts, atol=1e-9)
    # the crop's corners map to the model input's outer pixel edges
    corners = geo.original_to_input(np.array([[box[1] - 0.5, box[0] - 0.5], [box[3] - 0.5, box[2] - 0.5]]))
    assert np.allclose(corners, [[-0.5, -0.5], [226.5, 226.5]])


def test_a_bright_spot_maps_back_to_its_original_location():
    """A spot in the original, carried through the pipeline, lands on the same model-input pixel the
    geometry predicts, and a map at that pixel lands back on the spot."""
    h, w = 400, 300
    px = np.full((h, w), 0.2, np.float32)
    spot = (210, 130)  # (x, y)
    px[spot[1] - 3:spot[1] + 4, spot[0] - 3:spot[0] + 4] = 1.0
    mask = _mask(h, w, (40, 20, 380, 280))
    spec = PreprocessSpec(clahe=False, crop_margin=0.0, intermediate_size=512, input_size=227)
    p = preprocess(Radiograph(px), spec, lung_mask=mask)
    ys, xs = np.nonzero(p.display_input > 0.9 * p.display_input.max())
    iy, ix = int(round(ys.mean())), int(round(xs.mean()))  # centre of the bright plateau
    pred = p.geometry.original_to_input(np.array([spot]))[0]
    assert abs(ix - pred[0]) <= 1.0 and abs(iy - pred[1]) <= 1.0
    heat = np.zeros((227, 227), np.float32)
    heat[iy, ix] = 1.0
    back = p.geometry.map_to_original(heat)
    assert back.shape == (h, w)
    by, bx = np.unravel_index(np.argmax(back), back.shape)
    assert abs(bx - spot[0]) <= 2 and abs(by - spot[1]) <= 2
    assert back[:40].max() == 0.0  # outside the crop stays at the fill value


def test_original_to_grid_gives_mask_fraction():
    geo = Geometry(original_size=(100, 100), crop_box=(0, 0, 100, 100), intermediate_size=100, input_size=100)
    m = _mask(100, 100, (0, 0, 100, 50))
    g = geo.original_to_grid(m, (10, 10))
    assert g.shape == (10, 10)
    assert np.allclose(g[:, :5], 1.0) and np.allclose(g[:, 5:], 0.0)
    with pytest.raises(ValueError):
        geo.original_to_grid(np.zeros((5, 5)), (10, 10))


def test_clahe_increases_local_contrast_and_keeps_range():
    yy, xx = np.mgrid[0:256, 0:256]
    low = (0.45 + 0.05 * np.sin(xx / 6.0)).astype(np.float32)
    out = apply_clahe(low, clip=2.0, tiles=8)
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 2 * low.std()


def test_sixteen_bit_full_size_radiograph_goes_through():
    """A full-size (4892x4020) 16-bit-range image through crop/resize/CLAHE (no segmentation)."""
    rng = np.random.default_rng(0)
    px = (rng.integers(0, 65535, (4892, 4020), dtype=np.uint16).astype(np.float32) / 65535.0)
    mask = _mask(4892, 4020, (500, 300, 4400, 3800))
    p = preprocess(Radiograph(px), PreprocessSpec(), lung_mask=mask)
    assert p.resized.shape == (1024, 1024)
    assert p.model_input.shape == (3, 227, 227)
