"""Reading speed of `read_image` on full-size radiographs (4892x4020, 16-bit).

Files are written to a temporary folder: a 16-bit grayscale PNG, an 8-bit JPEG, an
uncompressed 16-bit TIFF, and DICOMs (uncompressed and RLE Lossless, 12 bits stored, with a
window). Prints the median time of `read_image` for each and, as the ratio the project tracks,
that time against a baseline measured in the same process: the bare decode of the same file
(`cv2.imdecode` for rasters, `pydicom.dcmread(...).pixel_array` for DICOM).

    .venv/bin/python benchmarks/bench_read_image.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.uid import RLELossless

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core"))
from cxr_studio.core.imaging.io import read_image  # noqa: E402
from dicom_factory import make_dicom  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _radiograph_like(h: int, w: int) -> np.ndarray:
    """Smooth anatomy-like structure plus noise, so compressors see realistic entropy."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 2000 + 1200 * np.sin(xx / 300) * np.cos(yy / 410) + rng.normal(0, 40, (h, w))
    return img.clip(0, 4095).astype(np.uint16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    h, w = 4892, 4020
    a12 = _radiograph_like(h, w)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = {
            "PNG 16-bit": d / "x16.png",
            "JPEG 8-bit": d / "x8.jpg",
            "TIFF 16-bit": d / "x16.tif",
        }
        cv2.imwrite(str(files["PNG 16-bit"]), (a12 * 16).astype(np.uint16))
        cv2.imwrite(str(files["JPEG 8-bit"]), (a12 >> 4).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(files["TIFF 16-bit"]), (a12 * 16).astype(np.uint16),
                    [cv2.IMWRITE_TIFF_COMPRESSION, 1])
        dicoms = {
            "DICOM raw": make_dicom(d / "raw.dcm", a12, bits_stored=12, window=(2000, 3000)),
            "DICOM RLE": make_dicom(d / "rle.dcm", a12, bits_stored=12, window=(2000, 3000),
                                    compress=RLELossless),
        }
        print(f"image {w}x{h}; median of {args.repeats} runs")
        print(f"{'file':<14}{'size MB':>9}{'read_image ms':>15}{'bare decode ms':>16}{'ratio':>8}")
        for label, p in {**files, **dicoms}.items():
            if label.startswith("DICOM"):
                def bare(p=p):
                    return pydicom.dcmread(p).pixel_array
            else:
                def bare(p=p):
                    return cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_UNCHANGED)
            read_image(p)  # warm-up (imports, page cache)
            ours = _median_ms(lambda p=p: read_image(p), args.repeats)
            base = _median_ms(bare, args.repeats)
            size = p.stat().st_size / 1e6
            print(f"{label:<14}{size:>9.1f}{ours:>15.0f}{base:>16.0f}{ours / base:>8.2f}")


if __name__ == "__main__":
    main()
