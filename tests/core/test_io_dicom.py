"""read_image on DICOM: LUTs, MONOCHROME1, compression, decoders, and every refusal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from cxr_studio.core.imaging.io import ImageReadError, read_image
from damage import assert_damage_only_raises_image_read_error
from dicom_factory import base_dataset, gradient, make_dicom


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def linear_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto 0..1."""
    return np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def refused(path: Path, *words: str) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert path.name in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def test_plain_monochrome2(tmp_path: Path) -> None:
    a = gradient(64, 48, top=4095)
    p = make_dicom(tmp_path / "a.dcm", a, bits_stored=12, pixel_spacing=(0.143, 0.139))
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, minmax(a), atol=1e-6)
    m = r.meta
    assert (m["format"], m["bit_depth"], m["photometric"], m["modality"]) == ("DICOM", 12, "MONOCHROME2", "CR")
    assert m["original_size"] == (64, 48)
    assert m["pixel_spacing"] == pytest.approx((0.143, 0.139))
    assert m["window"] is None and m["inverted"] is False and m["path"] == str(p)


def test_imager_pixel_spacing_is_the_fallback(tmp_path: Path) -> None:
    r = read_image(make_dicom(tmp_path / "b.dcm", gradient(), imager_spacing=(0.2, 0.25)))
    assert r.meta["pixel_spacing"] == pytest.approx((0.2, 0.25))


@pytest.mark.parametrize("name", ["IM000001", "scan.img", "looks_like.png"])
def test_detected_by_content_not_suffix(tmp_path: Path, name: str) -> None:
    a = gradient()
    r = read_image(make_dicom(tmp_path / name, a))
    assert r.meta["format"] == "DICOM"
    np.testing.assert_allclose(r.pixels, minmax(a), atol=1e-6)


def test_dcm_without_preamble(tmp_path: Path) -> None:
    a = gradient()
    p = make_dicom(tmp_path / "legacy.dcm", a, preamble=False)
    assert p.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(p).pixels, minmax(a), atol=1e-6)


def test_slope_intercept_then_window(tmp_path: Path) -> None:
    a = gradient(64, 64, top=4095)
    # Window given in rescaled units: only correct if the rescale is applied first.
    p = make_dicom(tmp_path / "w.dcm", a, bits_stored=12, slope=2.0, intercept=-1000.0, window=(3000, 2000))
    r = read_image(p)
    expected = minmax(linear_window(a * 2.0 - 1000.0, 3000, 2000))
    np.testing.assert_allclose(r.pixels, expected, atol=1e-5)
    wrong = minmax(linear_window(a.astype(np.float64), 3000, 2000))
    assert np.abs(r.pixels - wrong).max() > 0.2
    assert r.meta["window"] == {"center": 3000.0, "width": 2000.0, "function": "LINEAR"}
    assert r.meta["rescale"] == (2.0, -1000.0)


def test_window_alone(tmp_path: Path) -> None:
    a = gradient(64, 64, top=4095)
    r = read_image(make_dicom(tmp_path / "w.dcm", a, bits_stored=12, window=(1024, 512)))
    np.testing.assert_allclose(r.pixels, minmax(linear_window(a, 1024, 512)), atol=1e-5)
    assert float((r.pixels == 0).mean()) > 0.05 and float((r.pixels == 1).mean()) > 0.5  # clipped


def test_voi_lut_sequence(tmp_path: Path) -> None:
    a = gradient(64, 64, top=4095)
    lut = np.rint(np.sqrt(np.arange(4096) / 4095.0) * 60000).astype(np.uint16)  # a gamma curve
    r = read_image(make_dicom(tmp_path / "lut.dcm", a, bits_stored=12, voi_lut=lut))
    np.testing.assert_allclose(r.pixels, minmax(lut[a]), atol=1e-6)
    assert r.meta["window"] == "VOI LUT"


def test_window_that_blanks_the_image_is_skipped(tmp_path: Path) -> None:
    a = gradient(64, 64, top=1000)
    r = read_image(make_dicom(tmp_path / "off.dcm", a, bits_stored=12, window=(3500, 100)))
    np.testing.assert_allclose(r.pixels, minmax(a), atol=1e-6)
    assert "skipped" in r.meta["window"]


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    a = gradient(64, 64, top=4095)
    m2 = read_image(make_dicom(tmp_path / "m2.dcm", a, bits_stored=12, window=(2000, 3000)))
    m1 = read_image(make_dicom(tmp_path / "m1.dcm", a, bits_stored=12, window=(2000, 3000),
                               photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-6)
    assert m1.meta["photometric"] == "MONOCHROME1" and m1.meta["inverted"] is True
    assert m1.pixels[0, 0] > 0.9  # lowest stored value shows bright (bone) in MONOCHROME1


def test_signed_pixels(tmp_path: Path) -> None:
    a = (gradient(64, 64, top=4000).astype(np.int32) - 2000).astype(np.int16)
    r = read_image(make_dicom(tmp_path / "s.dcm", a, bits_stored=16))
    np.testing.assert_allclose(r.pixels, minmax(a), atol=1e-6)


def test_rgb_dicom_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 50, 3)).astype(np.uint8)
    r = read_image(make_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(r.pixels, minmax(y), atol=1e-5)


# ------------------------------------------------------------------------ compression

def test_rle_lossless(tmp_path: Path) -> None:
    a = gradient(64, 48, top=4095)
    p = make_dicom(tmp_path / "rle.dcm", a, bits_stored=12, compress=RLELossless)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, minmax(a), atol=1e-6)
    assert r.meta["transfer_syntax"] == RLELossless.name


def test_jpeg2000_lossless(tmp_path: Path) -> None:
    if not get_encoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 encoder installed for pydicom (pylibjpeg-openjpeg)")
    a = gradient(64, 48, top=4095)
    r = read_image(make_dicom(tmp_path / "j2k.dcm", a, bits_stored=12, compress=JPEG2000Lossless))
    np.testing.assert_allclose(r.pixels, minmax(a), atol=1e-6)


def test_jpeg_baseline(tmp_path: Path) -> None:
    a = gradient(64, 64, top=255, dtype=np.uint8)
    r = read_image(make_dicom(tmp_path / "jpg.dcm", a, compress="jpeg-baseline"))
    assert np.abs(r.pixels - minmax(a)).mean() < 0.02  # lossy
    assert r.meta["transfer_syntax"] == JPEGBaseline8Bit.name


@pytest.mark.parametrize("uid", [RLELossless, JPEG2000Lossless])
def test_missing_decoder_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uid) -> None:
    if uid == JPEG2000Lossless and not get_encoder(uid).is_available:
        pytest.skip("no JPEG 2000 encoder to build the file")
    p = make_dicom(tmp_path / "c.dcm", gradient(), bits_stored=12, compress=uid)
    decoder = get_decoder(uid)
    unavailable = dict(decoder._unavailable)
    for label in decoder._available:
        unavailable[label] = (f"{label} (test removed it)",)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", unavailable)
    msg = refused(p, "no decoder", "install", uid.name)
    assert "removed it" in msg


# ------------------------------------------------------------------------ refusals

def test_multi_frame_refused(tmp_path: Path) -> None:
    frames = np.stack([gradient(), gradient()[::-1], gradient()[:, ::-1]])
    refused(make_dicom(tmp_path / "cine.dcm", frames, bits_stored=12), "multi-frame", "3 frames")


def test_no_pixel_data_refused(tmp_path: Path) -> None:
    ds = base_dataset(64, 64)
    p = tmp_path / "report.dcm"
    ds.save_as(p, enforce_file_format=True)
    refused(p, "without pixel data")


def test_truncated_dicom_refused(tmp_path: Path) -> None:
    p = make_dicom(tmp_path / "whole.dcm", gradient(128, 128))
    data = p.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 5000])
    refused(cut, "DICOM")


def test_header_only_dicom_bytes_refused(tmp_path: Path) -> None:
    p = tmp_path / "junk.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    refused(p, "DICOM")


def test_dicom_bomb_refused_before_decoding(tmp_path: Path) -> None:
    ds = base_dataset(60000, 60000)
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0" * 64
    p = tmp_path / "bomb.dcm"
    ds.save_as(p, enforce_file_format=True)
    refused(p, "megapixels", "limit")


def test_tiny_and_constant_dicom_refused(tmp_path: Path) -> None:
    refused(make_dicom(tmp_path / "one.dcm", np.array([[7]], np.uint16)), "at least")
    refused(make_dicom(tmp_path / "flat.dcm", np.full((64, 64), 300, np.uint16)), "same value")


def test_text_or_noise_named_dcm_refused(tmp_path: Path) -> None:
    t = tmp_path / "notes.dcm"
    t.write_text("this is a text file\n")
    refused(t, "text file")
    n = tmp_path / "noise.dcm"
    n.write_bytes(np.random.default_rng(1).integers(0, 256, 3000).astype(np.uint8).tobytes())
    refused(n, "does not look like a DICOM image")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damage it sees
@pytest.mark.parametrize("compress", [None, RLELossless])
def test_damaged_dicom_only_ever_raises_image_read_error(tmp_path: Path, compress) -> None:
    data = make_dicom(tmp_path / "src.dcm", gradient(64, 64), bits_stored=12, compress=compress).read_bytes()
    assert_damage_only_raises_image_read_error(data, tmp_path, ".dcm", first=132, seed=2)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("slope,intercept,centre,width", [
    (1.0, 0.0, 1500.0, 1000.0), (2.0, -1024.0, 400.0, 1500.0), (0.5, 10.0, 900.5, 2.0)])
def test_luts_agree_with_pydicom(tmp_path: Path, function: str, slope: float, intercept: float,
                                 centre: float, width: float) -> None:
    """The float32 fast path gives what pydicom's reference LUT functions give."""
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    a = gradient(64, 64, top=4095)
    p = make_dicom(tmp_path / "x.dcm", a, bits_stored=12, slope=slope, intercept=intercept,
                   window=(centre, width))
    ds = dcmread(p)
    ds.VOILUTFunction = function
    ds.save_as(p)
    with np.errstate(over="ignore"):
        ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    r = read_image(p)
    np.testing.assert_allclose(r.pixels, minmax(ref), atol=2e-5)
    assert r.meta["window"]["function"] == function


def test_palette_colour_dicom_goes_through_its_palette(tmp_path: Path) -> None:
    idx = gradient(64, 64, top=255, dtype=np.uint8)
    palette = np.random.default_rng(3).integers(0, 65536, size=(256, 3)).astype(np.uint16)
    r = read_image(make_dicom(tmp_path / "pal.dcm", idx, palette=palette))
    rgb = palette[idx].astype(np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(r.pixels, minmax(y), atol=1e-5)
    assert r.meta["photometric"] == "PALETTE COLOR"


def test_transfer_syntax_without_any_decoder(tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML

    p = make_dicom(tmp_path / "video.dcm", gradient(64, 64, top=255, dtype=np.uint8))
    ds = dcmread(p)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(p)
    refused(p, MPEG2MPML.name, "no installed DICOM decoder")


def test_float_pixel_data_and_nan(tmp_path: Path) -> None:
    f = gradient(64, 64, top=1000).astype(np.float32) / 7.0
    ds = base_dataset(64, 64)
    ds.BitsAllocated, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 1, "MONOCHROME2"
    ds.FloatPixelData = f.tobytes()
    p = tmp_path / "float.dcm"
    ds.save_as(p, enforce_file_format=True)
    np.testing.assert_allclose(read_image(p).pixels, minmax(f), atol=1e-6)
    f[3, 3] = np.nan
    ds.FloatPixelData = f.tobytes()
    ds.save_as(p, enforce_file_format=True)
    refused(p, "NaN")
