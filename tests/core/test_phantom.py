"""Synthetic phantoms: determinism, anatomy, masks, lesions and the dataset writer."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from cxr_studio.core.phantoms.phantom import (
    LESION_TYPES, Phantom, PhantomError, make_phantom, write_phantom_dataset,
)
from cxr_studio.core.imaging.radiograph import Radiograph

SIZE = 256  # small and fast; one test checks the default 512


@pytest.fixture(scope="module")
def normals() -> list[Phantom]:
    return [make_phantom(s, SIZE, abnormal=False) for s in range(6)]


def test_same_seed_identical_and_seeds_differ() -> None:
    a, b = make_phantom(11, SIZE), make_phantom(11, SIZE)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.lung_mask, b.lung_mask)
    assert np.array_equal(a.lesion_mask, b.lesion_mask)
    assert a.label == b.label and a.lesions == b.lesions
    c = make_phantom(12, SIZE)
    assert np.abs(a.image - c.image).mean() > 0.01
    assert not np.array_equal(a.lung_mask, c.lung_mask)


def test_types_shapes_and_range() -> None:
    ph = make_phantom(3)
    assert ph.image.shape == (512, 512) and ph.image.dtype == np.float32
    assert ph.lung_mask.shape == (512, 512) and ph.lung_mask.dtype == bool
    assert ph.lesion_mask.shape == (512, 512) and ph.lesion_mask.dtype == bool
    assert 0.0 <= ph.image.min() and ph.image.max() <= 1.0
    assert ph.image.max() - ph.image.min() > 0.6  # uses the range: dark air, bright bone
    assert ph.seed == 3 and ph.label in (0, 1)


def test_two_lungs_of_plausible_area() -> None:
    """Each lung covers 6-25% of the image (real Shenzhen masks: 5th-95th percentile 7-17%)."""
    for seed in range(24):
        ph = make_phantom(seed, 128)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(ph.lung_mask.astype(np.uint8))
        areas = sorted(stats[1:, cv2.CC_STAT_AREA] / ph.lung_mask.size, reverse=True)
        assert len(areas) == 2, f"seed {seed}: {len(areas)} lung components"
        assert all(0.06 <= a <= 0.25 for a in areas), (seed, areas)
        cx = [stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] / 2 for i in (1, 2)]
        assert min(cx) < 64 < max(cx)  # one lung each side of the midline


def test_lungs_darker_than_body_and_outside_air_darkest(normals: list[Phantom]) -> None:
    for ph in normals:
        lungs = ph.image[ph.lung_mask].mean()
        centre_col = ph.image[int(SIZE * 0.3):int(SIZE * 0.6), SIZE // 2 - 4:SIZE // 2 + 4].mean()
        corner = ph.image[: SIZE // 20, : SIZE // 20].mean()  # air beside the neck
        assert lungs + 0.2 < centre_col, ph.seed  # mediastinum/spine bright
        assert corner < lungs - 0.1, ph.seed


def test_heart_shadow_on_image_right(normals: list[Phantom]) -> None:
    """PA view: the heart lies to the patient's left, which is the image's right."""
    for ph in normals:
        rows = slice(int(SIZE * 0.55), int(SIZE * 0.7))
        left = ph.image[rows, int(SIZE * 0.32):int(SIZE * 0.44)].mean()
        right = ph.image[rows, int(SIZE * 0.56):int(SIZE * 0.68)].mean()
        assert right > left + 0.05, (ph.seed, left, right)


def test_lesion_mask_nonempty_iff_abnormal() -> None:
    labels = set()
    for s in range(12):
        ph = make_phantom(s, SIZE)
        labels.add(ph.label)
        assert ph.lesion_mask.any() == (ph.label == 1) == bool(ph.lesions), s
        assert not (ph.lesion_mask & ~ph.lung_mask).any(), s
    assert labels == {0, 1}  # abnormal=None lets the seed decide, both occur


@pytest.mark.parametrize("kind", LESION_TYPES)
def test_each_lesion_type_inside_lung_and_visible(kind: str) -> None:
    for seed in (5, 6):
        ab = make_phantom(seed, SIZE, lesion_types=[kind])
        no = make_phantom(seed, SIZE, abnormal=False)
        assert ab.label == 1 and [d["type"] for d in ab.lesions] == [kind]
        d = ab.lesions[0]
        assert set(d) >= {"type", "centre", "size", "side"} and d["side"] in ("left", "right")
        m = ab.lesion_mask
        assert m.any() and not (m & ~ab.lung_mask).any()
        # same seed, same anatomy: masks equal and the image changes only near the lesion
        assert np.array_equal(ab.lung_mask, no.lung_mask)
        diff = np.abs(ab.image - no.image)
        near = cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        assert diff[~near].max() < 0.02, (kind, seed, diff[~near].max())
        change = abs(float(ab.image[m].mean() - no.image[m].mean()))
        assert change > 0.03, (kind, seed, change)
        if kind in ("cyst",):
            assert ab.image[m].mean() < no.image[m].mean()  # hyper-lucent
        if kind in ("nodule", "consolidation", "effusion"):
            assert ab.image[m].mean() > no.image[m].mean()  # opacity


def test_effusion_sits_at_the_lung_base() -> None:
    ph = make_phantom(21, SIZE, lesion_types=["effusion"])
    side = 1 if ph.lesions[0]["side"] == "right" else 2
    ys = np.nonzero(ph.lung_mask[:, : SIZE // 2] if side == 1 else ph.lung_mask[:, SIZE // 2:])[0]
    ly = np.nonzero(ph.lesion_mask)[0]
    assert ly.mean() > ys.min() + 0.6 * (ys.max() - ys.min())


def test_several_lesions_and_bad_arguments() -> None:
    ph = make_phantom(2, SIZE, lesion_types=["nodule", "cyst", "effusion"])
    assert [d["type"] for d in ph.lesions] == ["nodule", "cyst", "effusion"]
    with pytest.raises(PhantomError):
        make_phantom(2, SIZE, lesion_types=["tumour"])
    with pytest.raises(PhantomError):
        make_phantom(2, SIZE, abnormal=False, lesion_types=["nodule"])
    with pytest.raises(ValueError):
        make_phantom(-1, SIZE)
    with pytest.raises(ValueError):
        make_phantom(1, 10)
    one = make_phantom(2, SIZE, lesion_types="cavity")  # a single name is accepted
    assert [d["type"] for d in one.lesions] == ["cavity"]


def test_radiograph_meta() -> None:
    ph = make_phantom(4, SIZE)
    rg = ph.radiograph()
    assert isinstance(rg, Radiograph) and rg.meta["format"] == "phantom"
    assert rg.shape == (SIZE, SIZE) and np.array_equal(rg.pixels, ph.image)


def test_write_dataset_layout(tmp_path) -> None:
    out = write_phantom_dataset(tmp_path / "ds", 6, seed=40, size=128, abnormal_fraction=0.5)
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sum(int(r["label"]) for r in rows) == 3
    for i, r in enumerate(rows):
        name = r["filename"]
        assert name == f"PHANTOM_{i:04d}_{r['label']}.png" and int(r["seed"]) == 40 + i
        img = cv2.imread(str(out / "CXR_png" / name), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / "mask" / name.replace(".png", "_mask.png")), -1)
        les = cv2.imread(str(out / "lesion_mask" / name.replace(".png", "_lesion.png")), -1)
        assert img.dtype == np.uint8 and img.shape == (128, 128)
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(les)) <= {0, 255}
        assert (les.max() == 255) == (r["label"] == "1") == bool(r["lesion_types"])
        ph = make_phantom(40 + i, 128, abnormal=r["label"] == "1")
        assert np.array_equal(mask > 0, ph.lung_mask)
    assert not list(out.rglob(".*"))  # no temporary files left behind
    with pytest.raises(ValueError):
        write_phantom_dataset(tmp_path / "bad", 0)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError):
        write_phantom_dataset(tmp_path / "afile", 2)
