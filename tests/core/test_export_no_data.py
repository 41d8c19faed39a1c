"""Issue 17: an export at threshold 0 colours only where the layer map has a value (its cells'
receptive-field-centre span, `map_box`), as the app draws no-data transparent; re-rendering from the
sidecar gives the same pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_studio.batch import ExportOptions, run
from cxr_studio.core.imaging.io import read_image
from cxr_studio.core.imaging.png import write_png
from cxr_studio.core.pipeline import PreprocessSpec
from cxr_studio.core.models import build_model
from cxr_studio.core.models.checkpoint import save_checkpoint
from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.render import to_uint8
from cxr_studio.core.render.export import rerender

INPUT = 227


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    kw = {"width": 0.125, "fc_width": 16}
    spec = PreprocessSpec.preset("fast").replace(input_size=INPUT, intermediate_size=256, crop=False)
    path = tmp_path_factory.mktemp("ckpt") / "narrow.pt"
    return save_checkpoint(path, build_model("cxrnet", **kw), arch="cxrnet", arch_kwargs=kw, preprocess=spec)


@pytest.mark.parametrize("method", ["activation", "gradcam"])
def test_threshold_zero_leaves_the_no_data_border_grey(ckpt: Path, tmp_path: Path, method: str) -> None:
    img = tmp_path / "chest.png"
    write_png(img, make_phantom(3, size=300, abnormal=True).image)
    run([img], ExportOptions(out=tmp_path / "o", checkpoint=str(ckpt), method=method, threshold=0.0, opacity=1.0))
    side = json.loads((tmp_path / "o" / "chest.json").read_text())
    y0, x0, y1, x1 = side["map_box"]
    # cxrnet relu5 cells are centred on input pixels 37..189 of 227, every 8: with half a stride
    # around them the map has values on 33..193; the box is that span on the 300-pixel image
    assert 0 < y0 < y1 < 300 and 0 < x0 < x1 < 300
    assert y0 == pytest.approx(33 * 300 / 227, abs=2) and y1 == pytest.approx(194 * 300 / 227, abs=2)
    rgb = read_image(tmp_path / "o" / "chest.png").pixels  # luminance of the written overlay
    gray = to_uint8(read_image(img).pixels).astype(np.float32) / 255
    outside = np.ones(gray.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert np.allclose(rgb[outside], gray[outside], atol=1 / 255 + 1e-6)  # untouched radiograph
    assert not np.allclose(rgb[y0:y1, x0:x1], gray[y0:y1, x0:x1], atol=0.02)  # coloured inside
    again = rerender(tmp_path / "o" / "chest.json")
    from cxr_studio.core.render.export import encode_png

    assert encode_png(again) == (tmp_path / "o" / "chest.png").read_bytes()


def test_input_methods_cover_the_whole_crop(ckpt: Path, tmp_path: Path) -> None:
    img = tmp_path / "chest.png"
    write_png(img, make_phantom(3, size=200, abnormal=True).image)
    run([img], ExportOptions(out=tmp_path / "o", checkpoint=str(ckpt), method="occlusion"))
    assert json.loads((tmp_path / "o" / "chest.json").read_text())["map_box"] is None
