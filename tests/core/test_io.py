"""read_image for PNG / JPEG / TIFF / BMP, every bad-input case, and list_images (write_png: test_write_png.py)."""
from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cxr_studio.core.imaging import io
from damage import assert_damage_only_raises_image_read_error

from cxr_studio.core.imaging.io import ImageReadError, Radiograph, read_image


def ramp(h: int = 64, w: int = 48, top: int = 255, dtype=np.uint8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.rint((yy / (h - 1) + xx / (w - 1)) / 2.0 * top).astype(dtype)


def rgb_image(h: int = 40, w: int = 50, top: int = 255, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, top + 1, size=(h, w, 3)).astype(dtype)


def luma(rgb: np.ndarray, top: float) -> np.ndarray:
    f = rgb.astype(np.float64)
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]) / top


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height (8-bit gray) with a tiny, mostly missing body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)
                     + png_chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------ good rasters

def test_png_8bit_gray_exact_values_and_meta(tmp_path: Path) -> None:
    a = ramp()
    p = tmp_path / "gray8.png"
    Image.fromarray(a).save(p)
    r = read_image(p)
    assert isinstance(r, Radiograph)
    assert r.pixels.dtype == np.float32 and r.pixels.shape == (64, 48)
    np.testing.assert_allclose(r.pixels, a / 255.0, atol=1e-7)
    assert r.meta["path"] == str(p)
    assert r.meta["format"] == "PNG"
    assert r.meta["bit_depth"] == 8
    assert r.meta["photometric"] == "MONOCHROME2"
    assert r.meta["original_size"] == (64, 48)
    assert r.meta["pixel_spacing"] is None


def test_png_16bit_gray_keeps_16bit_precision(tmp_path: Path) -> None:
    a = ramp(300, 257, top=65535, dtype=np.uint16)
    p = tmp_path / "gray16.png"
    assert cv2.imwrite(str(p), a)
    r = read_image(p)
    assert r.meta["bit_depth"] == 16
    np.testing.assert_allclose(r.pixels, a / 65535.0, atol=1e-7)
    assert len(np.unique(r.pixels)) > 256  # an 8-bit path would collapse these levels


def test_png_rgb_uses_luminance_weights(tmp_path: Path) -> None:
    a = rgb_image()
    p = tmp_path / "rgb.png"
    Image.fromarray(a, "RGB").save(p)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, luma(a, 255), atol=1e-6)
    assert r.meta["photometric"] == "RGB"


def test_png_rgba_ignores_alpha(tmp_path: Path) -> None:
    a = rgb_image(seed=1)
    alpha = np.random.default_rng(2).integers(0, 256, size=a.shape[:2]).astype(np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(p)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, luma(a, 255), atol=1e-6)
    assert r.meta["photometric"] == "RGBA"


def test_png_gray_with_alpha_ignores_alpha(tmp_path: Path) -> None:
    a = ramp()
    p = tmp_path / "la.png"
    Image.fromarray(np.dstack([a, np.full_like(a, 7)]), "LA").save(p)
    np.testing.assert_allclose(read_image(p).pixels, a / 255.0, atol=1e-6)


def test_png_palette_converted_through_its_colours(tmp_path: Path) -> None:
    idx = (ramp() // 32).astype(np.uint8)  # 8 palette entries
    palette = np.random.default_rng(3).integers(0, 256, size=(256, 3)).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    p = tmp_path / "palette.png"
    im.save(p)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, luma(palette[idx], 255), atol=1e-6)
    assert r.meta["photometric"] == "PALETTE"


def test_png_16bit_rgb_keeps_precision(tmp_path: Path) -> None:
    a = rgb_image(top=65535, dtype=np.uint16, seed=4)
    p = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(p), a[:, :, ::-1])  # cv2 writes BGR
    r = read_image(p)
    assert r.meta["bit_depth"] == 16
    np.testing.assert_allclose(r.pixels, luma(a, 65535), atol=1e-6)


def test_png_with_resolution_gives_pixel_spacing(tmp_path: Path) -> None:
    p = tmp_path / "dpi.png"
    Image.fromarray(ramp()).save(p, dpi=(254, 127))
    r = read_image(p)
    np.testing.assert_allclose(r.meta["pixel_spacing"], (0.2, 0.1), rtol=1e-3)
    Image.fromarray(ramp()).save(p, dpi=(72, 72))  # a screen default says nothing
    assert read_image(p).meta["pixel_spacing"] is None


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg(tmp_path: Path, mode: str) -> None:
    a = ramp(96, 80) if mode == "L" else np.dstack([ramp(96, 80), ramp(96, 80)[::-1], ramp(96, 80)[:, ::-1]])
    p = tmp_path / "x.jpg"
    Image.fromarray(a, mode).save(p, quality=95)
    r = read_image(p)
    expected = a / 255.0 if mode == "L" else luma(a, 255)
    assert np.abs(r.pixels - expected).mean() < 0.01  # lossy, but close
    assert r.meta["format"] == "JPEG" and r.meta["bit_depth"] == 8


def test_tiff_8_and_16_bit(tmp_path: Path) -> None:
    a8, a16 = ramp(), ramp(64, 48, top=65535, dtype=np.uint16)
    Image.fromarray(a8).save(tmp_path / "a.tif")
    assert cv2.imwrite(str(tmp_path / "b.tiff"), a16)
    r8, r16 = read_image(tmp_path / "a.tif"), read_image(tmp_path / "b.tiff")
    np.testing.assert_allclose(r8.pixels, a8 / 255.0, atol=1e-7)
    np.testing.assert_allclose(r16.pixels, a16 / 65535.0, atol=1e-7)
    assert (r8.meta["format"], r16.meta["bit_depth"]) == ("TIFF", 16)


def test_tiff_rgb(tmp_path: Path) -> None:
    a = rgb_image(seed=5)
    Image.fromarray(a, "RGB").save(tmp_path / "c.tif")
    np.testing.assert_allclose(read_image(tmp_path / "c.tif").pixels, luma(a, 255), atol=1e-6)


def test_float_tiff_in_range_kept_out_of_range_stretched(tmp_path: Path) -> None:
    f = ramp().astype(np.float32) / 400.0  # 0..0.6375: already in 0..1, kept as is
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(read_image(tmp_path / "f.tif").pixels, f, atol=1e-7)
    g = f * 1000.0 - 50.0  # outside 0..1: min/max
    Image.fromarray(g, "F").save(tmp_path / "g.tif")
    np.testing.assert_allclose(read_image(tmp_path / "g.tif").pixels, (g - g.min()) / np.ptp(g), atol=1e-6)


def test_white_is_zero_tiff_is_shown_as_displayed(tmp_path: Path) -> None:
    """A MINISWHITE TIFF (the raster cousin of MONOCHROME1): stored 0 reads as white."""
    a = ramp()
    h, w = a.shape
    data = a.tobytes()
    tags = [(256, w), (257, h), (258, 8), (259, 1), (262, 0), (273, 0), (277, 1), (278, h), (279, len(data))]
    data_off = 8 + 2 + len(tags) * 12 + 4
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", t, 4, 1, data_off if t == 273 else v) for t, v in tags) + struct.pack("<I", 0)
    p = tmp_path / "wiz.tif"
    p.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + data)
    np.testing.assert_allclose(read_image(p).pixels, 1.0 - a / 255.0, atol=1e-6)


def test_bmp_gray_and_rgb(tmp_path: Path) -> None:
    a, c = ramp(), rgb_image(seed=6)
    Image.fromarray(a).save(tmp_path / "a.bmp")
    Image.fromarray(c, "RGB").save(tmp_path / "c.bmp")
    ra, rc = read_image(tmp_path / "a.bmp"), read_image(tmp_path / "c.bmp")
    np.testing.assert_allclose(ra.pixels, a / 255.0, atol=1e-6)
    np.testing.assert_allclose(rc.pixels, luma(c, 255), atol=1e-6)
    assert ra.meta["format"] == "BMP"


def test_format_comes_from_content_not_suffix(tmp_path: Path) -> None:
    p = tmp_path / "really_a_png.jpg"
    Image.fromarray(ramp()).save(p, format="PNG")
    r = read_image(str(p))  # str paths work too
    assert r.meta["format"] == "PNG"
    np.testing.assert_allclose(r.pixels, ramp() / 255.0, atol=1e-7)


# ------------------------------------------------------------------------ bad input

def assert_refused(path: Path, *words: str) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert Path(path).name in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    assert "Traceback" not in msg
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.png", "does not exist")


def test_not_a_path() -> None:
    with pytest.raises(ImageReadError, match="not a file path"):
        read_image(None)  # type: ignore[arg-type]


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "folder.png"
    d.mkdir()
    assert_refused(d, "folder")


def test_zero_bytes(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    assert_refused(p, "empty")


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif"), ("BMP", ".bmp")])
def test_truncated(tmp_path: Path, fmt: str, suffix: str) -> None:
    p = tmp_path / f"whole{suffix}"
    Image.fromarray(rgb_image(200, 200, seed=7), "RGB").save(p, format=fmt)
    data = p.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    assert_refused(cut, "truncated")


def test_text_renamed_png(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("Patient notes: this is not an image.\n" * 5)
    assert_refused(p, "text", "PNG")


def test_unsupported_text_file(tmp_path: Path) -> None:
    p = tmp_path / "readme.txt"
    p.write_text("hello")
    assert_refused(p, "not", "supported")


def test_random_bytes(tmp_path: Path) -> None:
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000).astype(np.uint8).tobytes())
    assert_refused(p, "not a recognised image format")


def test_gif_animation_unsupported(tmp_path: Path) -> None:
    frames = [Image.fromarray(ramp()), Image.fromarray(ramp()[::-1].copy())]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert_refused(p, "GIF", "not supported")


def test_multipage_tiff_refused(tmp_path: Path) -> None:
    frames = [Image.fromarray(ramp()), Image.fromarray(ramp()[::-1].copy())]
    p = tmp_path / "pages.tif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert_refused(p, "2 images")


def test_decompression_bomb_header_refused_before_allocating(tmp_path: Path) -> None:
    p = crafted_png(tmp_path / "bomb.png", 100_000, 100_000)
    assert p.stat().st_size < 2000
    assert_refused(p, "megapixels")


def test_own_pixel_limit_fires_below_pillows(tmp_path: Path) -> None:
    # 110 MP: above MAX_PIXELS (100 MP) but below Pillow's error threshold (~179 MP),
    # so only our own header check can refuse it.
    assert 10_000 * 11_000 > io.MAX_PIXELS
    assert 10_000 * 11_000 < 2 * Image.MAX_IMAGE_PIXELS
    assert_refused(crafted_png(tmp_path / "big.png", 11_000, 10_000), "11000 x 10000", "limit")


def test_no_pillow_bomb_warning_escapes_below_our_limit(tmp_path: Path) -> None:
    # 90.25 MP: Pillow warns above ~89.5 MP, but MAX_PIXELS (100 MP) allows it; the crafted
    # body is missing, so the read ends as "truncated", and no Pillow warning leaks out.
    assert Image.MAX_IMAGE_PIXELS < 9500 * 9500 <= io.MAX_PIXELS
    p = crafted_png(tmp_path / "large.png", 9500, 9500)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert_refused(p, "truncated")
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pixel_limit_is_a_module_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "ok.png"
    Image.fromarray(ramp()).save(p)
    from cxr_studio.core.imaging import formats

    monkeypatch.setattr(formats, "MAX_PIXELS", 1000)
    assert io.MAX_PIXELS == 1000  # io reads the one setting
    assert_refused(p, "limit")


@pytest.mark.parametrize("shape", [(1, 1), (10, 200), (200, 31)])
def test_tiny_images_refused(tmp_path: Path, shape: tuple[int, int]) -> None:
    p = tmp_path / "tiny.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)).save(p)
    assert_refused(p, f"at least {io.MIN_SIDE}")


def test_constant_image_refused(tmp_path: Path) -> None:
    p = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(p)
    assert_refused(p, "same value in every pixel")


def test_nan_in_float_tiff_refused(tmp_path: Path) -> None:
    f = ramp().astype(np.float32) / 255.0
    f[10, 10] = np.nan
    p = tmp_path / "nan.tif"
    Image.fromarray(f, "F").save(p)
    assert_refused(p, "NaN")


def test_unexpected_errors_are_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "fine.png"
    Image.fromarray(ramp()).save(p)

    def boom(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(io.cv2, "imdecode", boom)
    err = assert_refused(p, "could not read", "decoder exploded")
    assert isinstance(err.__cause__, RuntimeError)


# ------------------------------------------------------------------------ folders, suffixes

def test_is_supported() -> None:
    for name in ("a.png", "b.JPG", "c.jpeg", "d.TIF", "e.tiff", "f.bmp", "g.dcm", "h.DICOM"):
        assert io.is_supported(name), name
    for name in ("a.gif", "b.txt", "c", "d.png.bak"):
        assert not io.is_supported(name), name
    assert set(io.SUPPORTED_SUFFIXES) >= {".png", ".jpg", ".tif", ".bmp", ".dcm"}


def test_list_images_natural_order(tmp_path: Path) -> None:
    for name in ("img10.png", "img2.PNG", "img1.jpg", "notes.txt", ".hidden.png", "anim.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)  # DICOM without suffix
    (tmp_path / "README").write_bytes(b"just text")
    names = [p.name for p in io.list_images(tmp_path)]
    assert names == ["IM0001", "img1.jpg", "img2.PNG", "img10.png"]
    with pytest.raises(ImageReadError, match="not a folder"):
        io.list_images(tmp_path / "img1.jpg")


# ------------------------------------------------------------------------ real data

@pytest.mark.realdata
def test_real_montgomery_and_shenzhen(nlm_root: Path) -> None:
    for sub in ("MontgomerySet/CXR_png", "ChinaSet_AllFiles/CXR_png"):
        first = sorted((nlm_root / sub).glob("*.png"))[0]
        r = read_image(first)
        h, w = r.shape
        assert min(h, w) >= 256
        assert r.meta["original_size"] == (h, w)
        assert r.meta["format"] == "PNG" and r.meta["bit_depth"] in (8, 16)
        assert 0.0 <= float(r.pixels.min()) < 0.2 and 0.8 < float(r.pixels.max()) <= 1.0
        assert float(r.pixels.std()) > 0.05


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP"])
def test_damaged_files_only_ever_raise_image_read_error(tmp_path: Path, fmt: str) -> None:
    """Cuts and flipped bytes anywhere: the result is an image or ImageReadError, nothing else."""
    src = tmp_path / "src"
    Image.fromarray(rgb_image(64, 64, seed=8), "RGB").save(src, format=fmt)
    assert_damage_only_raises_image_read_error(src.read_bytes(), tmp_path, f".{fmt.lower()}", first=0, seed=9)
