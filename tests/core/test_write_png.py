"""The one PNG writer (`write_png`): 8/16-bit gray from float or integer input, RGB and RGBA, bad input
refused with nothing written, and atomic (a failed write keeps the old file). Split from test_io.py."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_studio.core.imaging import io
from cxr_studio.core.imaging.io import ImageWriteError, read_image, write_png
from test_io import ramp


@pytest.mark.parametrize("bits", [8, 16])
def test_write_png_float_round_trip(tmp_path: Path, bits: int) -> None:
    f = ramp(70, 90, top=65535, dtype=np.uint16).astype(np.float32) / 65535.0
    out = write_png(tmp_path / "sub" / "out.png", f, bits=bits)
    assert out == tmp_path / "sub" / "out.png"
    raw = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == (np.uint8 if bits == 8 else np.uint16)
    top = 255 if bits == 8 else 65535
    np.testing.assert_array_equal(raw, np.rint(f.astype(np.float64) * top))
    np.testing.assert_allclose(read_image(out).pixels, f, atol=0.5 / top + 1e-7)
    assert [x.name for x in out.parent.iterdir()] == ["out.png"]  # no temp file left


def test_write_png_integer_inputs(tmp_path: Path) -> None:
    a8, a16 = ramp(), ramp(top=65535, dtype=np.uint16)
    up = cv2.imread(str(write_png(tmp_path / "up.png", a8, bits=16)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(up, a8.astype(np.uint16) * 257)
    down = cv2.imread(str(write_png(tmp_path / "down.png", a16, bits=8)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(down, np.rint(a16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize("bad,bits,words", [
    (np.full((8, 8), 1.5), 8, "0..1"),
    (np.full((8, 8), np.nan), 8, "NaN"),
    (np.zeros((8, 8)), 12, "8 or 16"),
    (np.zeros((8, 8, 3)), 8, "2-D"),
    (np.zeros((8, 8), np.int32), 8, "int32"),
])
def test_write_png_bad_input(tmp_path: Path, bad: np.ndarray, bits: int, words: str) -> None:
    with pytest.raises(ImageWriteError, match=words.replace(".", r"\.")):
        write_png(tmp_path / "bad.png", bad, bits=bits)
    assert not any(tmp_path.iterdir())


def test_write_png_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "keep.png"
    write_png(dest, ramp())
    before = dest.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", fail)
    with pytest.raises(OSError):
        write_png(dest, ramp()[::-1].copy())
    assert dest.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir()] == ["keep.png"]


def test_write_png_colour_round_trips_rgb_and_rgba(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    back = cv2.imread(str(write_png(tmp_path / "rgb.png", rgb)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back[..., ::-1], rgb)  # OpenCV reads BGR
    back4 = cv2.imread(str(write_png(tmp_path / "rgba.png", rgba)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back4, rgba[..., [2, 1, 0, 3]])
    with pytest.raises(ImageWriteError, match="8-bit"):
        write_png(tmp_path / "x.png", rgb, bits=16)
