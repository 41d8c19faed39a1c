"""Lung segmentation: heuristic and atlas methods, mask clean-up, input checks, real NLM data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_studio.core.lungs import postprocess as pp
from cxr_studio.core.lungs import dice, segment_lungs, segment_lungs_detailed
from cxr_studio.core.lungs.heuristic import lung_template, segment_heuristic


def _phantom(seed: int, size: int = 256):
    phantom = pytest.importorskip("cxr_studio.core.phantoms.phantom")
    return phantom.make_phantom(seed, size=size)


# ---------------------------------------------------------------- post-processing helpers


def test_clean_mask_keeps_two_largest_fills_holes_drops_specks() -> None:
    m = np.zeros((128, 128), bool)
    m[20:100, 10:50] = True
    m[20:100, 70:115] = True
    m[50:55, 25:30] = False  # a hole
    m[5:8, 60:63] = True  # a speck
    m[110:125, 55:65] = True  # a third, smaller blob
    out = pp.clean_mask(m)
    assert out.dtype == bool and out.shape == m.shape
    assert out[52, 27]  # hole filled
    assert not out[6, 61] and not out[118, 60]
    assert out[60, 30] and out[60, 90]


def test_content_box_drops_black_frame_but_keeps_labels() -> None:
    img = np.zeros((200, 300), np.float32)
    img[30:170, 40:260] = np.random.default_rng(0).uniform(0.2, 0.9, (140, 220))
    img[5:12, 5:60] = 1.0  # a burned-in label in the frame
    box = pp.content_box(img)
    assert abs(box.y0 - 30) <= 2 and abs(box.y1 - 170) <= 2
    assert abs(box.x0 - 40) <= 2 and abs(box.x1 - 260) <= 2


def test_template_has_two_fields_either_side_of_midline() -> None:
    t = lung_template(128)
    assert t[:, :64].sum() > 0.1 * 64 * 128 and t[:, 64:].sum() > 0.1 * 64 * 128
    assert t[:, 62:66].sum() == 0  # mediastinum stays free
    assert lung_template(128, side="right")[:, 64:].sum() == 0


# ---------------------------------------------------------------- heuristic


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_heuristic_on_phantoms(seed: int) -> None:
    p = _phantom(seed)
    mask = segment_heuristic(p.image)
    assert mask.dtype == bool and mask.shape == p.image.shape
    assert dice(mask, p.lung_mask) >= 0.75


@pytest.mark.parametrize("shape", [(300, 217), (217, 300), (64, 64), (1100, 700)])
def test_heuristic_any_size_and_aspect(shape: tuple[int, int]) -> None:
    p = _phantom(5, size=256)
    import cv2

    img = cv2.resize(p.image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    truth = cv2.resize(p.lung_mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    mask = segment_heuristic(img)
    assert mask.shape == shape and mask.dtype == bool
    assert dice(mask, truth) >= 0.7


def test_heuristic_handles_black_frame_and_uint8() -> None:
    p = _phantom(6)
    framed = np.zeros((400, 330), np.uint8)
    framed[40:296, 30:286] = np.round(p.image * 255).astype(np.uint8)
    truth = np.zeros(framed.shape, bool)
    truth[40:296, 30:286] = p.lung_mask
    mask = segment_heuristic(framed)
    assert mask.shape == framed.shape
    assert not mask[:40].any() and not mask[:, 290:].any()
    assert dice(mask, truth) >= 0.75


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros(100, np.float32), "2-D"),
        (np.zeros((4, 64, 64), np.float32), "2-D"),
        (np.zeros((8, 8), np.float32), "too small"),
        (np.full((64, 64), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_input_is_a_clear_value_error(bad: np.ndarray, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        segment_heuristic(bad)
    for method in ("auto", "heuristic", "unet", "atlas"):  # every method, before any work (atlas: before its folder)
        with pytest.raises(ValueError, match=words):
            segment_lungs(bad, method=method)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_flat_image_gives_two_template_fields_not_a_crash(value: float) -> None:
    mask = segment_heuristic(np.full((128, 160), value, np.float32))
    assert mask.shape == (128, 160) and mask.dtype == bool
    # with nothing to see, the fitted shape prior itself: one field either side of the midline
    assert mask[:, :80].sum() > 0.05 * mask.size and mask[:, 80:].sum() > 0.05 * mask.size
    assert not mask[:, 78:82].any()


def test_dispatch_heuristic() -> None:
    p = _phantom(2)
    res = segment_lungs_detailed(p.image, method="heuristic")
    assert res.method == "heuristic"
    assert np.array_equal(res.mask, segment_lungs(p.image, method="heuristic"))


# ---------------------------------------------------------------- real NLM data


def _nlm_pairs(root: Path, dataset: str, n: int, offset: int, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import cv2

    out = []
    if dataset == "montgomery":
        base = root / "MontgomerySet"
        files = sorted((base / "CXR_png").glob("*.png"))[offset::step][:n]
        for f in files:
            m = np.zeros((1, 1), bool)
            for side in ("leftMask", "rightMask"):
                mm = cv2.imread(str(base / "ManualMask" / side / f.name), cv2.IMREAD_GRAYSCALE) > 127
                m = mm if m.shape != mm.shape else (m | mm)
            out.append((cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0, m))
    else:
        base = root / "ChinaSet_AllFiles"
        for mf in sorted((base / "mask").glob("*_mask.png"))[offset::step][:n]:
            img = base / "CXR_png" / mf.name.replace("_mask", "")
            out.append(
                (cv2.imread(str(img), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0,
                 cv2.imread(str(mf), cv2.IMREAD_GRAYSCALE) > 127)
            )
    return out


@pytest.mark.parametrize("dataset", ["montgomery", "shenzhen"])
def test_heuristic_on_real_nlm_images(nlm_root: Path, dataset: str) -> None:
    """Heuristic on 10 real images per set. The issue's target is mean Dice >= 0.85 over a whole
    set; on a 10-image sample we ask mean >= 0.80 and no image below 0.4 (the sample is small and
    a single hard image moves the mean by several points)."""
    pairs = _nlm_pairs(nlm_root, dataset, 10, 1, 11 if dataset == "montgomery" else 43)
    assert len(pairs) == 10
    scores = [dice(segment_heuristic(img), m) for img, m in pairs]
    assert np.mean(scores) >= 0.80, scores
    assert min(scores) >= 0.4, scores


# ---------------------------------------------------------------- atlas


@pytest.fixture(scope="module")
def phantom_atlas_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    phantom = pytest.importorskip("cxr_studio.core.phantoms.phantom")
    out = tmp_path_factory.mktemp("atlas")
    phantom.write_phantom_dataset(out, 12, seed=100, size=256)
    return out


def test_atlas_from_phantom_folder_segments_other_phantoms(phantom_atlas_dir: Path) -> None:
    from cxr_studio.core.lungs.atlas import load_atlas, segment_atlas

    atlas = load_atlas(phantom_atlas_dir)
    assert len(atlas) == 12
    assert load_atlas(str(phantom_atlas_dir)) is atlas  # cached on the resolved path
    for seed in (0, 1, 2):  # not in the atlas (seeds 100..)
        p = _phantom(seed)
        mask = segment_atlas(p.image, phantom_atlas_dir)
        assert mask.dtype == bool and mask.shape == p.image.shape
        assert dice(mask, p.lung_mask) >= 0.85


def test_atlas_from_pairs_and_dispatch(phantom_atlas_dir: Path) -> None:
    from cxr_studio.core.lungs.atlas import Atlas, segment_atlas

    ps = [_phantom(s) for s in range(20, 26)]
    atlas = Atlas.from_pairs([p.image for p in ps], [p.lung_mask for p in ps])
    p = _phantom(3)
    assert dice(segment_atlas(p.image, atlas), p.lung_mask) >= 0.85
    res = segment_lungs_detailed(p.image, method="atlas", atlas=str(phantom_atlas_dir))
    assert res.method == "atlas" and dice(res.mask, p.lung_mask) >= 0.85


@pytest.mark.parametrize("shape", [(300, 217), (217, 300)])
def test_atlas_any_size(phantom_atlas_dir: Path, shape: tuple[int, int]) -> None:
    import cv2

    from cxr_studio.core.lungs.atlas import segment_atlas

    p = _phantom(4)
    img = cv2.resize(p.image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    truth = cv2.resize(p.lung_mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    mask = segment_atlas(img, phantom_atlas_dir)
    assert mask.shape == shape and mask.dtype == bool
    assert dice(mask, truth) >= 0.8


def test_atlas_reads_montgomery_layout(tmp_path: Path) -> None:
    import cv2

    from cxr_studio.core.lungs.atlas import load_atlas

    for sub in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (tmp_path / sub).mkdir(parents=True)
    for s in range(3):
        p = _phantom(40 + s)
        name = f"MCUCXR_{s:04d}_0.png"
        half = p.lung_mask.shape[1] // 2
        left, right = p.lung_mask.copy(), p.lung_mask.copy()
        left[:, :half] = False
        right[:, half:] = False
        cv2.imwrite(str(tmp_path / "CXR_png" / name), np.round(p.image * 65535).astype(np.uint16))
        cv2.imwrite(str(tmp_path / "ManualMask/leftMask" / name), left.astype(np.uint8) * 255)
        cv2.imwrite(str(tmp_path / "ManualMask/rightMask" / name), right.astype(np.uint8) * 255)
    (tmp_path / "CXR_png" / "MCUCXR_0099_0.png").write_bytes(b"")  # no masks: skipped
    atlas = load_atlas(tmp_path)
    assert len(atlas) == 3
    # both halves merged: the atlas masks hold both lungs
    assert atlas.masks[0][:, :128].any() and atlas.masks[0][:, 128:].any()


def test_atlas_bad_input(tmp_path: Path) -> None:
    from cxr_studio.core.lungs.atlas import Atlas, segment_atlas

    img = _phantom(0).image
    with pytest.raises(ValueError, match="needs an atlas"):
        segment_atlas(img, None)
    with pytest.raises(ValueError, match="needs an atlas"):
        segment_lungs(img, method="atlas")
    with pytest.raises(ValueError, match="does not exist"):
        segment_atlas(img, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="CXR_png"):
        segment_atlas(img, tmp_path / "empty")
    (tmp_path / "nomask" / "CXR_png").mkdir(parents=True)
    (tmp_path / "nomask" / "mask").mkdir()
    with pytest.raises(ValueError, match="no image with a matching lung mask"):
        segment_atlas(img, tmp_path / "nomask")
    with pytest.raises(ValueError, match="pair up"):
        Atlas.from_pairs([img], [])
    with pytest.raises(ValueError, match="shape"):
        Atlas.from_pairs([img], [np.zeros((10, 10), bool)])


@pytest.mark.parametrize("dataset", ["montgomery", "shenzhen"])
def test_atlas_on_real_nlm_images(nlm_root: Path, dataset: str) -> None:
    """Atlas of 20 real images (even indices) segmenting 10 others (odd indices) of the same set.
    The issue's target (mean Dice >= 0.94, none below 0.5) is for a full-size atlas over a whole
    set; with a 20-image atlas and a 10-image sample we ask mean >= 0.90 and none below 0.5."""
    from cxr_studio.core.lungs.atlas import Atlas, segment_atlas

    step = 4 if dataset == "montgomery" else 20
    train = _nlm_pairs(nlm_root, dataset, 20, 0, step)
    test = _nlm_pairs(nlm_root, dataset, 10, 1, 10 if dataset == "montgomery" else 42)
    atlas = Atlas.from_pairs([i for i, _ in train], [m for _, m in train])
    scores = [dice(segment_atlas(img, atlas), m) for img, m in test]
    assert np.mean(scores) >= 0.90, scores
    assert min(scores) >= 0.5, scores
