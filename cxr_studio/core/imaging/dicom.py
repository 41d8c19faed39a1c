"""DICOM half of `io.read_image`: header checks, decoder availability, LUTs, MONOCHROME1.

Order of operations (DICOM PS3.3 C.11 / PS3.4 N.2): stored values -> modality LUT or rescale
slope/intercept -> VOI LUT or window centre/width (the first of several) -> min/max to 0..1 ->
MONOCHROME1 inverted so bone is bright. When the window would leave a blank image (every pixel
outside it) the window is skipped and the meta says so. When the pixel data holds values beyond
BitsStored (a wrong header), the real values are used and ``meta["warnings"]`` says so.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder, pixel_array

from cxr_studio.core.imaging.formats import ImageReadError, check_dimensions, luminance

log = logging.getLogger(__name__)


def read_dicom_pixels(p: Path, name: str, has_preamble: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a single-frame DICOM image into (float32 HxW 0..1 bone-bright, meta)."""
    ds = _open(pydicom, p, name, has_preamble)
    rows, cols = _check_image(ds, name, has_preamble)
    tsyntax = _check_decoder(ds, name, get_decoder)
    stored, bits_note = _check_bits_stored(ds, _decode(ds, name), tsyntax, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    values, window = _grey_values(stored, ds, photometric, name, apply_modality_lut, apply_voi_lut)
    pixels, window = _normalise(values, stored, ds, window, apply_modality_lut, name)
    inverted = photometric == "MONOCHROME1"
    if inverted:  # bone bright
        np.subtract(np.float32(1.0), pixels, out=pixels)
    meta = {
        "format": "DICOM",
        "bit_depth": int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        "photometric": photometric,
        "inverted": inverted,
        "original_size": (rows, cols),
        "pixel_spacing": _spacing(ds),
        "modality": str(ds.get("Modality", "")) or None,
        "window": window,
        "rescale": (float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)),
        "transfer_syntax": str(tsyntax.name) if tsyntax is not None else None,
    }
    if bits_note:
        meta["warnings"] = [bits_note]
        log.warning("%s", bits_note)
    return pixels.astype(np.float32, copy=False), meta


def _open(pydicom: Any, p: Path, name: str, has_preamble: bool) -> Any:
    """The dataset; without a preamble pydicom is asked to try anyway (``force``)."""
    try:
        return pydicom.dcmread(str(p), force=not has_preamble)
    except InvalidDicomError as e:
        raise ImageReadError(f"{name} is not a valid DICOM file ({e}).") from e
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ImageReadError(f"{name} is a damaged or truncated DICOM file ({e}).") from e


def _check_image(ds: Any, name: str, has_preamble: bool) -> tuple[int, int]:
    """(rows, columns) of a dataset that holds one image: pixel data, sane dimensions, one frame."""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_preamble and (len(ds) == 0 or not has_pixels):
        raise ImageReadError(
            f"{name} does not look like a DICOM image: it has no DICOM preamble and no pixel "
            "data could be found in it.")
    if not has_pixels:
        sop = ds.get("SOPClassUID")
        what = f" (it is a {sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise ImageReadError(f"{name} is a DICOM file without pixel data{what}; it holds no image.")

    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_dimensions(rows, cols, name)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            f"{name} is a multi-frame DICOM ({frames} frames, e.g. a tomosynthesis or cine "
            "series); only single radiographs are supported. Export one frame first.")
    return rows, cols


def _check_decoder(ds: Any, name: str, get_decoder: Any) -> Any:
    """The transfer syntax (None when the file does not say); a compressed one needs a decoder."""
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax is not None and tsyntax.is_compressed:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError as e:
            raise ImageReadError(
                f"{name} uses the transfer syntax {tsyntax.name} ({tsyntax}), "
                "which no installed DICOM decoder can read.") from e
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise ImageReadError(
                f"{name} is compressed with {tsyntax.name} and no decoder for it is installed. "
                f"Install one of: {missing}.")
    return tsyntax


def _decode(ds: Any, name: str) -> np.ndarray:
    """The stored pixel values (pydicom's ``pixel_array``)."""
    try:
        return ds.pixel_array
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(
            f"{name}: the DICOM pixel data could not be decoded (truncated, damaged or an "
            f"unsupported encoding: {e}).") from e


def _grey_values(stored: np.ndarray, ds: Any, photometric: str, name: str, modality_lut: Any,
                 voi_lut: Any) -> tuple[np.ndarray, Any]:
    """(values, window used): colour (palette or RGB) as luminance; grey through the LUTs / window."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR" and stored.ndim == 2:
        stored, samples = apply_color_lut(stored, ds), 3
    if stored.ndim == 3 and samples in (3, 4):
        return luminance(np.asarray(stored)[:, :, :3]), None
    if stored.ndim == 2:
        return _apply_luts(stored, ds, modality_lut, voi_lut)
    raise ImageReadError(f"{name} has an unexpected DICOM pixel layout {stored.shape}.")


def _has_overlay_in_pixels(ds: Any) -> bool:
    """Retired overlays kept in the unused high bits of the pixel data (OverlayBitPosition > 0 with
    no OverlayData): there the bits above BitsStored are meant to be masked away."""
    for group in range(0x6000, 0x6020, 2):
        pos = ds.get((group, 0x0102))
        if pos is not None and (group, 0x3000) not in ds and int(pos.value or 0) > 0:
            return True
    return False


def _check_bits_stored(ds: Any, stored: np.ndarray, tsyntax: Any, name: str) -> tuple[np.ndarray, str | None]:
    """pydicom keeps only the BitsStored low bits. When the data really uses more (a header that
    says BitsStored 4 over 12-bit values gives 16 grey levels of garbage), use the data's real
    values and say so; returns (pixels, warning or None)."""
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    bits = int(ds.get("BitsStored", allocated) or allocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1  # high bits there may be sign extension
    if not (0 < bits < allocated) or stored.ndim != 2 or signed or _has_overlay_in_pixels(ds):
        return stored, None
    if tsyntax is not None and tsyntax.is_compressed:
        return stored, None  # the codec decides the bit depth; nothing above BitsStored to find
    try:
        full = pixel_array(ds, bits_stored=allocated)
    except Exception:  # noqa: BLE001 - keep pydicom's reading when the raw one fails
        return stored, None
    if full.shape != stored.shape or np.array_equal(full, stored):
        return stored, None
    top = int(full.max())
    used = max(top, 1).bit_length()
    return full, (
        f"{name}: the pixel values use {used} bits but the header says BitsStored={bits} "
        f"(HighBit={ds.get('HighBit', '?')}); the data's real range (up to {top}) was used instead of "
        f"keeping only {bits} bits ({2 ** bits} grey levels). Check the file's header."
    )


def _modality(stored: np.ndarray, ds: Any, modality_lut: Any) -> np.ndarray:
    """Modality LUT or rescale slope/intercept (float32 fast path for the linear rescale)."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(modality_lut(stored, ds), dtype=np.float32)
    values = stored.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def _apply_luts(stored: np.ndarray, ds: Any, modality_lut: Any, voi_lut: Any) -> tuple[np.ndarray, Any]:
    """Modality LUT / rescale, then the first VOI LUT or window; returns (values, window used).

    LINEAR and LINEAR_EXACT windows are computed here in float32 onto 0..1 (the min/max step
    that follows makes the output range irrelevant); VOI LUTs and SIGMOID go through pydicom.
    """
    values = _modality(stored, ds, modality_lut)
    if ds.get("VOILUTSequence"):
        # The LUT is indexed by integers; rescaled values are whole numbers in practice.
        indices = np.rint(values).astype(np.int64)
        return np.asarray(voi_lut(indices, ds, index=0), dtype=np.float32), "VOI LUT"
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return values, None
    centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if centre is None or width is None or width <= 0:
        return values, None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    window = {"center": centre, "width": width, "function": function}
    if function == "LINEAR" and width > 1:
        values -= np.float32(centre - 0.5)
        values *= np.float32(1.0 / (width - 1))
    elif function == "LINEAR_EXACT":
        values -= np.float32(centre)
        values *= np.float32(1.0 / width)
    else:
        with np.errstate(over="ignore"):  # SIGMOID's exp overflows harmlessly to 0 / 1
            out = voi_lut(values.astype(np.float64), ds, index=0)
        return np.asarray(out, dtype=np.float32), window
    values += np.float32(0.5)
    np.clip(values, 0.0, 1.0, out=values)
    return values, window


def _first(v: Any) -> float | None:
    try:
        return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
    except (TypeError, ValueError, IndexError):
        return None


def _normalise(values: np.ndarray, stored: np.ndarray, ds: Any, window: Any,
               modality_lut: Any, name: str) -> tuple[np.ndarray, Any]:
    """Min/max to 0..1 in place; if a window blanked the image, fall back to unwindowed values."""
    lo, hi = float(values.min()), float(values.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # min/max propagate NaN
        raise ImageReadError(f"{name} contains invalid pixel values (NaN or infinity).")
    if hi <= lo and window is not None and stored.ndim == 2:
        values = _modality(stored, ds, modality_lut)
        lo, hi = float(values.min()), float(values.max())
        window = {"skipped": window, "reason": "the window left every pixel at one value"}
    values = values.astype(np.float32, copy=False)
    if hi <= lo:
        return np.zeros(values.shape, np.float32), window  # refused later as a blank image
    values -= np.float32(lo)
    values *= np.float32(1.0 / (hi - lo))
    np.clip(values, 0.0, 1.0, out=values)
    return values, window


def _spacing(ds: Any) -> tuple[float, float] | None:
    """(row_mm, col_mm) from PixelSpacing, else ImagerPixelSpacing, else None."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        if v is not None:
            try:
                r, c = float(v[0]), float(v[1])
            except (TypeError, ValueError, IndexError):
                continue
            if r > 0 and c > 0:
                return (r, c)
    return None
