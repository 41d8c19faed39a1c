"""Export of one view: PNG + NPY + JSON, byte-identical re-render, no overwrite, atomic writes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_studio.core.render import export as ex
from cxr_studio.core.render.export import ExportError, export_view, rerender, unique_stem
from cxr_studio.core.imaging.io import read_image, write_png
from cxr_studio.core.render import overlay


@pytest.fixture()
def image_and_map(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    h, w = 97, 131
    yy, xx = np.mgrid[0:h, 0:w]
    img = (0.3 + 0.4 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 0.05 * rng.random((h, w))).clip(0, 1)
    path = write_png(tmp_path / "cxr.png", img, bits=16)
    heat = np.exp(-((xx - 80) ** 2 + (yy - 40) ** 2) / 300.0).astype(np.float32)
    return path, read_image(path).pixels, heat


SETTINGS = {
    "layer": "relu5", "channel": 7, "method": "activation", "class_index": 1, "threshold": 0.2,
    "opacity": 0.6, "colormap": "jet", "scale": "channel", "arch": "cxrnet",
    "spec": {"segmentation": "none", "input_size": 227}, "geometry": None,
}


def settings_for(image: Path, **extra: object) -> dict:
    return {**SETTINGS, "image_path": str(image), **extra}


def test_export_writes_three_files_and_sidecar(tmp_path: Path, image_and_map) -> None:
    path, px, heat = image_and_map
    res = export_view(tmp_path / "out" / "view", px, heat, settings_for(path))
    assert [p.name for p in res.paths()] == ["view.png", "view.npy", "view.json"]
    png = cv2.imread(str(res.png), cv2.IMREAD_UNCHANGED)
    assert png.shape == (97, 131, 3)  # full resolution of the radiograph
    assert (png[..., ::-1] == overlay(px, heat, "jet", 0.2, 0.6)).all()
    raw = np.load(res.npy)
    assert raw.dtype == np.float32 and (raw == heat).all()
    side = json.loads(res.json.read_text())
    assert side["image_sha256"] == ex.file_sha256(path)
    assert side["layer"] == "relu5" and side["channel"] == 7 and side["threshold"] == 0.2
    assert side["spec"]["input_size"] == 227
    assert set(side["versions"]) >= {"cxr_studio", "torch", "numpy", "opencv"}
    assert side["created"].endswith("+00:00")
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temp files left


def test_rerender_is_byte_identical(tmp_path: Path, image_and_map) -> None:
    path, px, heat = image_and_map
    res = export_view(tmp_path / "v", px, heat, settings_for(path, colormap="inferno", opacity=0.9))
    again = ex.encode_png(rerender(res.json))
    assert again == res.png.read_bytes()
    # a changed setting gives different bytes (the comparison can fail)
    side = json.loads(res.json.read_text())
    side["threshold"] = 0.5
    res.json.write_text(json.dumps(side))
    assert ex.encode_png(rerender(res.json)) != res.png.read_bytes()


def test_rerender_detects_changed_inputs(tmp_path: Path, image_and_map) -> None:
    path, px, heat = image_and_map
    res = export_view(tmp_path / "v", px, heat, settings_for(path))
    write_png(path, px[::-1], bits=16)  # the original image changed on disk
    with pytest.raises(ExportError, match="has changed since the export"):
        rerender(res.json)
    # the pixels can be passed in explicitly (in-memory images such as phantoms)
    assert ex.encode_png(rerender(res.json, pixels=px)) == res.png.read_bytes()
    np.save(res.npy, heat * 0.5)
    with pytest.raises(ExportError, match="changed since it was exported"):
        rerender(res.json)


def test_no_silent_overwrite(tmp_path: Path, image_and_map) -> None:
    path, px, heat = image_and_map
    res = export_view(tmp_path / "v", px, heat, settings_for(path))
    before = res.png.read_bytes()
    with pytest.raises(ExportError, match="Not overwriting existing file"):
        export_view(tmp_path / "v.png", px, heat, settings_for(path, colormap="gray"))
    assert res.png.read_bytes() == before
    res.npy.unlink()  # any one of the three existing is enough to refuse
    with pytest.raises(ExportError):
        export_view(tmp_path / "v", px, heat, settings_for(path, colormap="gray"))
    export_view(tmp_path / "v", px, heat, settings_for(path, colormap="gray"), overwrite=True)
    assert res.png.read_bytes() != before
    assert unique_stem(tmp_path, "v") == tmp_path / "v_1"
    assert unique_stem(tmp_path, "w") == tmp_path / "w"


@pytest.mark.parametrize("fail_at", ["npy", "replace"])
def test_failure_mid_write_leaves_nothing(tmp_path: Path, image_and_map, monkeypatch, fail_at: str) -> None:
    path, px, heat = image_and_map
    out = tmp_path / "o"
    out.mkdir()
    if fail_at == "npy":
        def boom(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr(ex.np, "save", boom)
    else:
        real = ex.os.replace
        calls = []

        def flaky(src, dst):
            calls.append(dst)
            if len(calls) == 2:  # png already in place, npy fails
                raise OSError("disk full")
            real(src, dst)

        monkeypatch.setattr(ex.os, "replace", flaky)
        monkeypatch.setattr(ex, "publish_exclusive", flaky)  # the no-overwrite path publishes exclusively
    with pytest.raises(OSError, match="disk full"):
        export_view(out / "v", px, heat, settings_for(path))
    assert list(out.iterdir()) == []


def test_bad_inputs_are_clear_errors(tmp_path: Path, image_and_map) -> None:
    path, px, heat = image_and_map
    with pytest.raises(ExportError, match="radiograph's grid"):
        export_view(tmp_path / "v", px, heat[:10], settings_for(path))
    bad = heat.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ExportError, match="NaN"):
        export_view(tmp_path / "v", px, bad, settings_for(path))
    with pytest.raises(ExportError, match="threshold"):
        export_view(tmp_path / "v", px, heat, settings_for(path, threshold=3))
    with pytest.raises(ExportError, match="lack colormap"):
        export_view(tmp_path / "v", px, heat, {"threshold": 0.1, "opacity": 0.5})
    with pytest.raises(ExportError, match="JSON"):
        export_view(tmp_path / "v", px, heat, settings_for(path, extra=object()))
    assert list(tmp_path.glob("v.*")) == []
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ExportError, match="not a readable export sidecar"):
        rerender(tmp_path / "x.json")


def test_overlay_covers_only_the_crop_box(tmp_path: Path, image_and_map) -> None:
    path, px, heat = image_and_map
    geom = {"original_size": [97, 131], "crop_box": [10, 20, 90, 120], "intermediate_size": 64,
            "input_size": 32}
    res = export_view(tmp_path / "v", px, heat, settings_for(path, geometry=geom, threshold=0.0))
    png = cv2.imread(str(res.png), cv2.IMREAD_UNCHANGED)[..., ::-1]
    g8 = np.floor(px * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    assert (png[:10] == g8[:10, :, None]).all() and (png[:, 120:] == g8[:, 120:, None]).all()
    assert (png[10:90, 20:120] == overlay(px[10:90, 20:120], heat[10:90, 20:120], "jet", 0.0, 0.6)).all()
    assert ex.encode_png(rerender(res.json)) == res.png.read_bytes()
