"""Datasets: every layout, combined roots, stratified splits, and the preprocessing cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_studio.training.data import (
    DatasetError,
    PreprocessCache,
    default_preprocess_fn,
    label_from_name,
    read_split,
    scan_root,
    scan_roots,
    stratified_split,
    write_split,
)
from cxr_studio.training.prepare import prepare_data
from cxr_studio.training.recipes import RecipeError

from train_helpers import blob_image, tiny_recipe, write_montgomery, write_shenzhen


def test_label_from_name() -> None:
    from pathlib import Path

    assert label_from_name(Path("CHNCXR_0001_0.png")) == 0
    assert label_from_name(Path("MCUCXR_0104_1.png")) == 1
    assert label_from_name(Path("scan.png")) is None


def test_montgomery_layout(tmp_path) -> None:
    root = write_montgomery(tmp_path / "MontgomerySet", 6)
    s = scan_root(root)
    assert len(s) == 6 and [x.label for x in s] == [0, 1, 0, 1, 0, 1]
    assert all(len(x.mask_paths) == 2 for x in s)  # left + right lung
    assert "reading 0" in s[0].meta["clinical_reading"]
    assert s[0].id == "MontgomerySet/CXR_png/MCUCXR_0000_0.png"


def test_shenzhen_layout_with_and_without_masks(tmp_path) -> None:
    root = write_shenzhen(tmp_path / "ChinaSet", 4)
    (root / "mask" / "CHNCXR_0003_1_mask.png").unlink()
    s = scan_root(root)
    assert [len(x.mask_paths) for x in s] == [1, 1, 1, 0]
    assert all(x.lesion_path is None for x in s)


def test_phantom_layout_has_lesion_masks(tmp_path) -> None:
    s = scan_root(write_shenzhen(tmp_path / "ph", 4, lesions=True, prefix="PHANTOM"))
    assert all(x.lesion_path is not None and x.lesion_path.exists() for x in s)


def test_class_folders_and_csv(tmp_path) -> None:
    import cv2

    for d, lab in (("normal", 0), ("abnormal", 1)):
        (tmp_path / "cls" / d).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "cls" / d / f"img{i}.png"), blob_image(i, bool(lab))[0])
    s = scan_root(tmp_path / "cls")
    assert sorted(x.label for x in s) == [0, 0, 0, 1, 1, 1]
    (tmp_path / "digits" / "0").mkdir(parents=True)
    (tmp_path / "digits" / "1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "digits" / "1" / "a.png"), blob_image(0, True)[0])
    assert [x.label for x in scan_root(tmp_path / "digits")] == [1]

    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\ncls/normal/img0.png,0\ncls/abnormal/img1.png,1\n")
    s = scan_root(csv_path)
    assert [x.label for x in s] == [0, 1] and s[1].path.exists()
    csv_path.write_text("path,label\ncls/normal/img0.png,2\n")
    with pytest.raises(DatasetError, match="label must be 0 or 1"):
        scan_root(csv_path)
    csv_path.write_text("file,y\n")
    with pytest.raises(DatasetError, match="path,label"):
        scan_root(csv_path)


def test_nested_root_and_combined_roots(tmp_path) -> None:
    write_montgomery(tmp_path / "nlm" / "MontgomerySet", 4)
    write_shenzhen(tmp_path / "nlm" / "ChinaSet_AllFiles", 6)
    assert len(scan_root(tmp_path / "nlm")) == 10
    write_shenzhen(tmp_path / "extra", 2)
    assert len(scan_roots([tmp_path / "nlm", tmp_path / "extra"])) == 12
    with pytest.raises(DatasetError, match="twice"):
        scan_roots([tmp_path / "extra", tmp_path / "extra"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labelled images"):
        scan_root(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not found"):
        scan_root(tmp_path / "nowhere")


def test_split_is_stratified_deterministic_and_reusable(tmp_path) -> None:
    write_montgomery(tmp_path / "M", 20)
    write_shenzhen(tmp_path / "S", 40)
    samples = scan_roots([tmp_path / "M", tmp_path / "S"])
    a = stratified_split(samples, [0.7, 0.2, 0.1], seed=3)
    b = stratified_split(samples, [0.7, 0.2, 0.1], seed=3)
    c = stratified_split(samples, [0.7, 0.2, 0.1], seed=4)
    assert a == b and a != c
    ids = a["train"] + a["val"] + a["test"]
    assert sorted(ids) == sorted(s.id for s in samples)  # a partition
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (42, 12, 6)
    labels = {s.id: s.label for s in samples}
    for part in ("val", "test"):  # both classes and both datasets in every part
        assert {labels[i] for i in a[part]} == {0, 1}
        assert {i.split("/")[0] for i in a[part]} == {"M", "S"}
    f = tmp_path / "split.json"
    write_split(f, a, 3, [0.7, 0.2, 0.1])
    assert json.loads(f.read_text())["seed"] == 3
    assert read_split(f, samples) == a
    with pytest.raises(DatasetError, match="not found in the data roots"):
        read_split(f, samples[:10])


def test_split_seed_keeps_the_split_when_the_seed_changes(tmp_path) -> None:
    """split_seed -1 follows seed; a set split_seed draws the split with it whatever the seed."""
    write_montgomery(tmp_path / "M", 20)
    write_shenzhen(tmp_path / "S", 40)
    roots = [tmp_path / "M", tmp_path / "S"]
    cache = f"cache_dir={tmp_path / 'cache'}"

    def split(*sets: str, run: str) -> dict:
        return prepare_data(tiny_recipe(cache, "split=[0.5,0.25,0.25]", *sets), roots, tmp_path / run,
                            progress=False).split

    s0, s1 = split("seed=0", run="a"), split("seed=1", run="b")
    assert s0 != s1  # without split_seed the seed draws the split (every older run folder and checkpoint)
    assert split("seed=1", "split_seed=0", run="c") == s0
    assert json.loads((tmp_path / "c" / "split.json").read_text())["seed"] == 0
    assert split("seed=7", run="c") == s0  # the run folder's split is reused and keeps its own seed
    assert json.loads((tmp_path / "c" / "split.json").read_text())["seed"] == 0
    with pytest.raises(RecipeError, match="split_seed must be -1"):
        tiny_recipe("split_seed=-2")


def test_cache_computes_once_and_reuses(tmp_path) -> None:
    root = write_shenzhen(tmp_path / "S", 6)
    recipe = tiny_recipe(f"cache_dir={tmp_path / 'cache'}")
    calls: list[str] = []

    def counting(sample, spec, use_masks):
        calls.append(sample.id)
        return default_preprocess_fn(sample, spec, use_masks)

    d1 = prepare_data(recipe, [root], tmp_path / "run1", preprocess_fn=counting, progress=False)
    assert len(calls) == 6 and d1.cache.misses == 6
    d2 = prepare_data(recipe, [root], tmp_path / "run2", preprocess_fn=counting, progress=False)
    assert len(calls) == 6 and d2.cache.hits == 6  # second run: no preprocessing at all
    assert np.array_equal(d1.train.images, d2.train.images)
    assert d1.split == d2.split
    # a different spec is a different cache entry
    other = tiny_recipe(f"cache_dir={tmp_path / 'cache'}", "preprocess.clahe=true")
    prepare_data(other, [root], tmp_path / "run3", preprocess_fn=counting, progress=False)
    assert len(calls) == 12
    # a changed file is recomputed
    import cv2

    img = cv2.imread(str(root / "CXR_png" / "CHNCXR_0000_0.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "CXR_png" / "CHNCXR_0000_0.png"), 255 - img)
    prepare_data(recipe, [root], tmp_path / "run4", preprocess_fn=counting, progress=False)
    assert len(calls) == 13
    # the run folder keeps its split: a rerun with another seed reuses split.json
    d5 = prepare_data(tiny_recipe(f"cache_dir={tmp_path / 'cache'}", "seed=9"), [root], tmp_path / "run1",
                      preprocess_fn=counting, progress=False)
    assert d5.split == d1.split


def test_cache_uses_dataset_masks(tmp_path) -> None:
    root = write_shenzhen(tmp_path / "S", 2)
    rec = tiny_recipe("preprocess.crop=true", "preprocess.segmentation=heuristic")
    cache = PreprocessCache(tmp_path / "c", rec.spec, 91, use_masks=True)
    s = scan_root(root)[0]
    cropped = cache.get(s)
    plain = PreprocessCache(tmp_path / "c", rec.spec.replace(crop=False), 91, use_masks=True).get(s)
    assert cropped.shape == plain.shape == (91, 91) and cropped.dtype == np.uint8
    assert not np.array_equal(cropped, plain)  # the lung-mask crop changed the pixels


def test_real_nlm_layouts_scan(nlm_root) -> None:
    s = scan_root(nlm_root)
    mont = [x for x in s if x.id.startswith("MontgomerySet/")]
    chn = [x for x in s if x.id.startswith("ChinaSet_AllFiles/")]
    assert len(mont) == 110 and len(chn) == 530
    assert sum(x.label for x in mont) == 46 and sum(x.label for x in chn) == 270
    assert all(len(x.mask_paths) == 2 for x in mont)
    assert sum(1 for x in chn if x.mask_paths) == 434


def test_paired_phantoms_stay_together(tmp_path) -> None:
    import cv2

    root = tmp_path / "pairs"
    (root / "CXR_png").mkdir(parents=True)
    for s in range(20):
        for lab in (0, 1):
            cv2.imwrite(str(root / "CXR_png" / f"PHANTOM_{s:06d}_{lab}.png"), blob_image(s, bool(lab))[0])
    samples = scan_root(root)
    split = stratified_split(samples, [0.7, 0.2, 0.1], seed=0)
    part_of = {i: p for p, ids in split.items() for i in ids}
    for s in range(20):
        a, b = (f"pairs/CXR_png/PHANTOM_{s:06d}_{lab}.png" for lab in (0, 1))
        assert part_of[a] == part_of[b]
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (28, 8, 4)


def test_cache_key_follows_the_learned_segmenter(tmp_path, monkeypatch) -> None:
    """New segmenter weights make new crops: with segmentation auto/unet the weights' hash is in
    the key; with a fixed method (or none) it is not."""
    from cxr_studio.core.pipeline import PreprocessSpec
    from cxr_studio.training import data as data_mod

    def key(seg: str) -> str:
        return data_mod.PreprocessCache(tmp_path, PreprocessSpec(segmentation=seg), 64).spec_key

    monkeypatch.setattr(data_mod, "segmenter_id", lambda: "weights-a")
    a = {seg: key(seg) for seg in ("auto", "unet", "heuristic", "none")}
    monkeypatch.setattr(data_mod, "segmenter_id", lambda: "weights-b")
    b = {seg: key(seg) for seg in ("auto", "unet", "heuristic", "none")}
    assert a["auto"] != b["auto"] and a["unet"] != b["unet"]
    assert a["heuristic"] == b["heuristic"] and a["none"] == b["none"]
    monkeypatch.undo()
    assert len(data_mod.segmenter_id()) in (4, 64)  # the real one: a sha256 (or "none")
