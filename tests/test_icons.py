"""Packaging, the icons: every size is a square PNG rendered from the one SVG, and the renderer refuses
a broken SVG without leaving a file. Split from test_packaging.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_studio import bundle_check

REPO = Path(__file__).resolve().parents[1]
RES = REPO / "resources"

_spec = importlib.util.spec_from_file_location("render_icons", REPO / "packaging" / "render_icons.py")
render_icons = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_icons)


def test_icons_exist_in_every_size_and_are_square_pngs() -> None:
    assert tuple(bundle_check.ICON_SIZES) == tuple(render_icons.SIZES)
    for size in bundle_check.ICON_SIZES:
        path = RES / bundle_check.icon_name(size)
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (size, size), path
            rgba = np.asarray(im.convert("RGBA"))
        assert rgba[0, 0, 3] == 0, "rounded corner is transparent"
        assert rgba[size // 2, size // 2, 3] == 255, "centre is opaque"
    big = np.asarray(Image.open(RES / bundle_check.icon_name(256)).convert("RGB")).astype(int)
    red = (big[..., 0] > 200) & (big[..., 1] < 90) & (big[..., 2] < 90)
    assert red.sum() > 50, "the heat spot is drawn"
    with Image.open(RES / "icons" / "cxr-studio.ico") as ico:
        assert (256, 256) in ico.info["sizes"] and (16, 16) in ico.info["sizes"]


def test_committed_pngs_are_renderings_of_the_svg(qapp, tmp_path: Path) -> None:
    for size in (16, 64):
        out = tmp_path / f"{size}.png"
        render_icons.render_png(RES / "icons" / render_icons.SVG_NAME, size, out)
        fresh = np.asarray(Image.open(out).convert("RGBA")).astype(float)
        committed = np.asarray(Image.open(RES / bundle_check.icon_name(size)).convert("RGBA")).astype(float)
        assert np.abs(fresh - committed).mean() < 1.5, f"{size}px icon is stale: run packaging/render_icons.py"


def test_render_rejects_a_broken_svg(qapp, tmp_path: Path) -> None:
    bad = tmp_path / "bad.svg"
    bad.write_text("<svg this is not xml")
    out = tmp_path / "out.png"
    with pytest.raises(ValueError, match="not an SVG"):
        render_icons.render_png(bad, 16, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
