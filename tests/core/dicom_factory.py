"""Build small DICOM files for tests (pydicom only; nothing downloaded)."""
from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def gradient(h: int = 64, w: int = 48, top: int = 4095, dtype: Any = np.uint16) -> np.ndarray:
    """A non-constant test image: a diagonal ramp from 0 to `top`."""
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (yy / (h - 1) + xx / (w - 1)) / 2.0
    return np.rint(ramp * top).astype(dtype)


def base_dataset(rows: int, cols: int, *, sop_class: str = SecondaryCaptureImageStorage) -> FileDataset:
    """A file dataset with patient/study boilerplate and no pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "0"
    ds.Modality = "CR"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, cols
    return ds


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    palette: np.ndarray | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    imager_spacing: tuple[float, float] | None = None,
    compress: str | None = None,
    preamble: bool = True,
) -> Path:
    """Write `pixels` ((H, W) or (frames, H, W) uint8/uint16/int16, or (H, W, 3) uint8 RGB)."""
    a = np.asarray(pixels)
    rgb = a.ndim == 3 and a.shape[-1] == 3 and photometric == "RGB"
    frames = a.shape[0] if (a.ndim == 3 and not rgb) else 1
    rows, cols = (a.shape[1:3] if frames > 1 else a.shape[:2])
    ds = base_dataset(rows, cols)
    bits_alloc = a.dtype.itemsize * 8
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored or bits_alloc
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if a.dtype.kind == "i" else 0
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = np.asarray(voi_lut, dtype="<u2").tobytes()
        item["LUTData"].VR = "OW"
        ds.VOILUTSequence = [item]
    if palette is not None:  # (entries, 3) uint16 colours for PALETTE COLOR
        ds.PhotometricInterpretation = "PALETTE COLOR"
        for i, colour in enumerate(("Red", "Green", "Blue")):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [len(palette), 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData",
                    np.asarray(palette[:, i], dtype="<u2").tobytes())
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    ds.PixelData = np.ascontiguousarray(a).tobytes()
    if compress == "jpeg-baseline":
        _to_jpeg_baseline(ds, a)
    elif compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=preamble)
    if not preamble:
        raw = Path(path).read_bytes()
        assert raw[128:132] == b"DICM"
        Path(path).write_bytes(raw[132:])  # drop preamble + 'DICM' (legacy files do this)
    return Path(path)


def _to_jpeg_baseline(ds: FileDataset, a: np.ndarray) -> None:
    """Encapsulate an 8-bit gray JPEG made by Pillow (pydicom has no baseline encoder)."""
    from PIL import Image

    if a.dtype != np.uint8 or a.ndim != 2:
        raise ValueError("jpeg-baseline test files need 8-bit 2-D pixels")
    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"


def read_back(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)
