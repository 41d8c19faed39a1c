"""Reading radiographs from disk into a `Radiograph`, and writing PNGs atomically.

`read_image(path)` accepts PNG, JPEG, TIFF, BMP (8- and 16-bit; grayscale, RGB, RGBA, palette)
and DICOM (recognised by its 'DICM' preamble whatever the file is called). Every problem a user
can cause ends as one `ImageReadError` (a `ValueError`) whose message names the file and says
what is wrong.

Choices (documented here because later stages rely on them):
- Colour becomes gray with ITU-R BT.601 luminance weights (0.299 R + 0.587 G + 0.114 B), the
  same weights Pillow and OpenCV use. Alpha is ignored (dropped, not composited): radiographs
  saved with an alpha channel are opaque in practice, and compositing on black would darken
  any semi-transparent edge the exporter left.
- Scaling to 0..1: integer rasters by their type's range (8-bit / 255, 16-bit / 65535, so a
  12-bit image stored in 16 bits stays dark, as it would in any viewer); signed or 32-bit
  integer rasters by their min/max; float rasters are kept when already inside 0..1, else
  stretched by min/max (NaN or infinity is refused). DICOM by min/max after the modality
  rescale and VOI LUT / window, then MONOCHROME1 is inverted so bone is bright.
- `MAX_PIXELS` (100 megapixels, 10000 x 10000) is checked from the header before any pixel is
  decoded. The largest chest detectors give about 20 MP (4892 x 4020 Montgomery originals); the
  float32 copy of a 100 MP image is already 400 MB, so anything larger is almost surely a
  decompression bomb or a wrong file.
- `MIN_SIDE` (32 pixels) and constant images are refused: lung segmentation, CLAHE and
  min/max normalisation have nothing to work with on them.
- Rasters are decoded by OpenCV (fast, keeps 16 bits) after Pillow has read the header; Pillow
  decodes what OpenCV refuses. EXIF orientation is not applied (neither library does by
  default, and radiograph exporters do not rely on it). The DICOM half lives in `dicom.py`;
  the suffixes read, the limits, the error type and the luminance weights in
  `formats.py` (which both share).
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image

from cxr_studio.core.imaging.native_stderr import quiet_native_stderr
from cxr_studio.core.imaging import formats
from cxr_studio.core.imaging.formats import (  # noqa: F401  (MIN_SIDE, the suffix lists, is_supported: re-exported)
    DICOM_SUFFIXES, MIN_SIDE, RASTER_SUFFIXES, SUPPORTED_SUFFIXES, ImageReadError, check_dimensions, is_supported,
    luminance)
from cxr_studio.core.imaging.folders import link_problem, list_images, scan_folder  # noqa: F401  (re-exported)
from cxr_studio.core.imaging.png import ImageWriteError, write_png  # noqa: F401  (the one PNG writer, re-exported)
from cxr_studio.core.imaging.radiograph import Radiograph

__all__ = [
    "ImageReadError", "ImageWriteError", "Radiograph", "MAX_PIXELS", "MIN_SIDE",
    "SUPPORTED_SUFFIXES", "DICOM_SUFFIXES", "is_supported", "read_image", "write_png",
    "list_images", "scan_folder", "link_problem",
]


def __getattr__(name: str) -> object:
    """``io.MAX_PIXELS`` reads the one setting in formats.py (set it there)."""
    if name == "MAX_PIXELS":
        return formats.MAX_PIXELS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _sniff(head: bytes) -> str | None:
    """Container format from the first bytes, or None when not recognised."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "HEIF/AVIF"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def read_image(path: str | os.PathLike) -> Radiograph:
    """Read a radiograph file into a `Radiograph` (float32 HxW in 0..1, bone bright).

    Raises `ImageReadError` for every kind of bad input; no other exception escapes.
    """
    try:
        p = Path(path).expanduser()
    except (TypeError, RuntimeError) as e:
        raise ImageReadError(f"{path!r} is not a file path.") from e
    name = p.name or str(p)
    try:
        return _read(p, name)
    except ImageReadError:
        raise
    except MemoryError as e:
        raise ImageReadError(f"Could not read {name}: not enough memory to decode it.") from e
    except Exception as e:  # last net: never let another type escape
        raise ImageReadError(f"Could not read {name}: {e}") from e


def _read(p: Path, name: str) -> Radiograph:
    if not p.exists():
        why = link_problem(p)
        if why:
            raise ImageReadError(f"{name} is {why}, not an image file.")
        raise ImageReadError(f"{name} does not exist (looked for {p}).")
    if p.is_dir():
        raise ImageReadError(f"{name} is a folder, not an image file.")
    if not p.is_file():
        raise ImageReadError(f"{name} is not a regular file.")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(512)
    except PermissionError as e:
        raise ImageReadError(f"{name} cannot be opened: permission denied.") from e
    except OSError as e:
        raise ImageReadError(f"{name} cannot be opened: {e.strerror or e}.") from e
    if size == 0:
        raise ImageReadError(f"{name} is empty (0 bytes).")

    kind = _sniff(head)
    suffix = p.suffix.lower()
    if kind is None and suffix in DICOM_SUFFIXES and not _looks_like_text(head):
        kind = "DICOM"  # DICOM without the 128-byte preamble: let pydicom try
    if kind == "DICOM":
        from cxr_studio.core.imaging.dicom import read_dicom_pixels  # on first use: pydicom loads in ~1 s

        pixels, meta = read_dicom_pixels(p, name, has_preamble=head[128:132] == b"DICM")
    elif kind in ("PNG", "JPEG", "TIFF", "BMP"):
        pixels, meta = _read_raster(p, name, kind)
    elif kind is not None:
        raise ImageReadError(
            f"{name} is a {kind} image, which is not supported; "
            "use PNG, JPEG, TIFF, BMP or DICOM.")
    else:
        what = "a text file" if _looks_like_text(head) else "not a recognised image format"
        if suffix in SUPPORTED_SUFFIXES:
            expect = "DICOM" if suffix in DICOM_SUFFIXES else suffix.lstrip(".").upper()
            lead = f"{name} does not contain {expect} data: it is {what}."
        else:
            lead = f"{name} is {what}, not a supported image."
        raise ImageReadError(f"{lead} Supported formats are PNG, JPEG, TIFF, BMP and DICOM.")
    meta["path"] = str(p)
    check_usable(pixels, name)
    return Radiograph(pixels, meta)


def check_usable(pixels: np.ndarray, name: str) -> None:
    """Refuse pixel arrays later stages cannot use: too small, non-finite or constant."""
    check_dimensions(pixels.shape[0], pixels.shape[1], name)
    lo, hi = float(pixels.min()), float(pixels.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # min/max propagate NaN
        raise ImageReadError(f"{name} contains invalid pixel values (NaN or infinity).")
    if hi <= lo:
        raise ImageReadError(
            f"{name} has the same value in every pixel (a blank image); there is nothing to "
            "segment or display.")


# ----------------------------------------------------------------------------- rasters

def _read_raster(p: Path, name: str, kind: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Header check with Pillow (lazy: no pixel decoded), then decode with OpenCV (fast)."""
    try:
        with _pil_open(p) as im:
            width, height = im.size
            mode = im.mode
            n_frames = getattr(im, "n_frames", 1)
            dpi = im.info.get("dpi")
    except Image.DecompressionBombError as e:
        raise ImageReadError(_bomb_message(name, e)) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(_damaged(name, kind, e)) from e
    if n_frames > 1:
        raise ImageReadError(
            f"{name} holds {n_frames} images (pages or animation frames); only single-image "
            "files are supported.")
    check_dimensions(height, width, name)

    array = _decode(p, name, kind)
    pixels = _to_gray01(array, name)
    meta = {
        "format": kind,
        "bit_depth": 1 if mode == "1" else int(array.dtype.itemsize * 8),
        "photometric": _PHOTOMETRIC.get(mode, "RGB" if array.ndim == 3 else "MONOCHROME2"),
        "original_size": (int(height), int(width)),
        "pixel_spacing": _spacing_from_dpi(dpi),
        "source_mode": mode,
    }
    return pixels, meta


_PHOTOMETRIC = {"P": "PALETTE", "PA": "PALETTE", "RGB": "RGB", "RGBA": "RGBA", "RGBX": "RGB",
                "CMYK": "CMYK", "YCbCr": "YBR", "LA": "MONOCHROME2", "La": "MONOCHROME2"}


@contextlib.contextmanager
def _pil_open(p: Path) -> Iterator[Image.Image]:
    """`Image.open` without Pillow's DecompressionBombWarning: `MAX_PIXELS` is our guard.

    Pillow still raises DecompressionBombError above twice its own limit (about 179 MP, above
    `MAX_PIXELS`); callers turn that into `ImageReadError`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(p) as im:
            yield im


def _bomb_message(name: str, e: BaseException) -> str:
    found = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(found.group(1)) / 1e6:,.0f} megapixels" if found else "too many pixels"
    return (f"{name} declares {size}, more than the limit of {formats.MAX_PIXELS / 1e6:.0f} megapixels; "
            "it is refused to protect memory (possibly a decompression bomb or a damaged header).")


def _damaged(name: str, kind: str, e: BaseException) -> str:
    return f"{name} looks like a {kind} file but could not be decoded (truncated or damaged: {e})."


def _decode(p: Path, name: str, kind: str) -> np.ndarray:
    """Decode with OpenCV (fast, keeps 16 bits); when it refuses, Pillow decodes or explains."""
    buf = np.fromfile(str(p), dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread
    with quiet_native_stderr():  # libpng / libtiff / OpenCV print their own [ERROR] lines
        array = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if array is not None and (kind != "JPEG" or b"\xff\xd9" in buf[-64:].tobytes()):
        if array.ndim == 3 and array.shape[2] == 3:
            return array[:, :, ::-1]  # BGR -> RGB
        if array.ndim == 3 and array.shape[2] == 4:
            return array[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
        return array
    try:
        with _pil_open(p) as im:
            im.load()
            if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"):
                im = im.convert("RGB")
            return np.array(im)
    except Image.DecompressionBombError as e:
        raise ImageReadError(_bomb_message(name, e)) from e
    except Exception as e:
        raise ImageReadError(_damaged(name, kind, e)) from e


def _to_gray01(array: np.ndarray, name: str) -> np.ndarray:
    """Any decoded raster (HxW, HxWx1..4; uint8/16, int, float, bool) -> float32 HxW 0..1."""
    a = np.asarray(array)
    if a.ndim == 3:
        channels = a.shape[2]
        if channels in (1, 2):  # gray or gray + alpha: alpha ignored
            a = a[:, :, 0]
        elif channels in (3, 4):  # RGB or RGBA: alpha ignored
            a = luminance(a[:, :, :3])
        else:
            raise ImageReadError(f"{name} has {channels} colour channels; expected 1, 3 or 4.")
    if a.ndim != 2:
        raise ImageReadError(f"{name} has an unexpected pixel layout {a.shape}.")
    return _scale01(a, name)


def _scale01(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype in (np.uint8, np.uint16):
        scale = np.float32(1.0 / (255.0 if a.dtype == np.uint8 else 65535.0))
        return np.multiply(a, scale, dtype=np.float32)  # one pass, no integer->float temporary
    f = a.astype(np.float32)
    lo, hi = float(f.min()), float(f.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # min/max propagate NaN
        raise ImageReadError(f"{name} contains invalid pixel values (NaN or infinity).")
    if np.issubdtype(a.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return f
    if hi <= lo:
        return np.zeros_like(f)  # constant; refused by check_usable with a clear message
    f -= np.float32(lo)
    f *= np.float32(1.0 / (hi - lo))
    return np.clip(f, 0.0, 1.0, out=f)


def _spacing_from_dpi(dpi: Any) -> tuple[float, float] | None:
    """Pixel spacing (row_mm, col_mm) from a stored resolution, when it is a plausible one.

    Resolutions at or below 100 dpi are ignored: editors and screen-capture tools write 72 or
    96 dpi into every file, which says nothing about the detector.
    """
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    if x > 100.0 and y > 100.0:
        return (25.4 / y, 25.4 / x)
    return None
