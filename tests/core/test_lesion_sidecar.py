"""Issue 14: the export sidecar records how the exported map scores against the image's lesion
outline (`cxr-studio export` and the app's export alike), and a reader's warning appears once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_studio.batch import ExportOptions, run
from cxr_studio.core.imaging.lesions import find_lesion_mask
from cxr_studio.core.imaging.io import read_image
from cxr_studio.core.pipeline import PreprocessSpec, preprocess
from cxr_studio.core.inspect.lesion_scores import lesion_scores
from cxr_studio.core.phantoms.phantom import write_phantom_dataset
from cxr_studio.core.render.sidecar import sidecar_settings

from test_batch_run import SPEC, ckpt  # noqa: F401 - the same tiny checkpoint fixture (tests/core is on sys.path)


def test_cli_export_scores_the_map_against_the_outline_beside_the_image(ckpt: Path, tmp_path: Path) -> None:
    root = write_phantom_dataset(tmp_path / "ph", 4, seed=5, size=160, abnormal_fraction=0.5)
    out = tmp_path / "o"
    res = run([root / "CXR_png"], ExportOptions(out=out, checkpoint=str(ckpt), method="gradcam", threshold=0.4))
    assert res.exported == 4
    for side_path in sorted(out.glob("*.json")):
        side = json.loads(side_path.read_text())
        image = Path(side["image_path"])
        mask, source = find_lesion_mask(image, read_image(image).shape)
        if image.stem.endswith("_0"):  # a normal phantom: an empty outline, nothing to score
            assert side["lesion_scores"] is None
            continue
        heat = np.load(out / side["npy"])
        want = lesion_scores(heat, mask, 0.4, source=source)
        assert side["lesion_scores"] == pytest.approx(want)
        assert side["lesion_scores"]["lesion_source"] == "lesion_mask" and side["lesion_scores"]["threshold"] == 0.4


def test_an_image_without_an_outline_has_none(ckpt: Path, tmp_path: Path) -> None:
    from cxr_studio.core.imaging.png import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    img = tmp_path / "plain.png"
    write_png(img, make_phantom(1, size=128, abnormal=True).image)
    run([img], ExportOptions(out=tmp_path / "o", checkpoint=str(ckpt)))
    side = json.loads((tmp_path / "o" / "plain.json").read_text())
    assert "lesion_scores" in side and side["lesion_scores"] is None


def test_a_reader_warning_is_listed_once() -> None:
    from cxr_studio.core.phantoms.phantom import make_phantom

    rad = make_phantom(1, size=128).radiograph()
    rad.meta["warnings"] = ["the header says BitsStored=4"]
    pre = preprocess(rad, SPEC)
    assert pre.warnings.count("the header says BitsStored=4") == 1  # the pipeline carries it (the app shows it)
    side = sidecar_settings(loaded=None, layer="relu5", channel=0, method="activation", class_index=None,
                            scale="channel", ranking="max", threshold=0.3, opacity=0.5, colormap="jet",
                            radiograph=rad, preprocessed=pre)
    assert side["warnings"].count("the header says BitsStored=4") == 1


def test_a_damaged_lesion_mask_is_one_sentence_and_the_export_still_runs(ckpt: Path, tmp_path: Path, capfd) -> None:
    from cxr_studio.core.imaging.lesions import LesionError

    root = write_phantom_dataset(tmp_path / "ph", 2, seed=9, size=128, abnormal_fraction=1.0)
    bad = sorted((root / "lesion_mask").glob("*.png"))[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    image = root / "CXR_png" / bad.name.replace("_lesion", "")
    with pytest.raises(LesionError, match="cannot read the mask") as e:
        find_lesion_mask(image, (128, 128))
    assert str(bad) in str(e.value)
    res = run([image], ExportOptions(out=tmp_path / "o", checkpoint=str(ckpt)))
    assert res.exported == 1  # the outline is only extra information: the export does not fail
    side = json.loads((tmp_path / "o" / f"{image.stem}.json").read_text())
    assert side["lesion_scores"] is None and any("lesion outline not read" in w for w in side["warnings"])
    assert "libpng" not in capfd.readouterr().err
