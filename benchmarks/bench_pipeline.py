"""Preprocessing speed on a full-size radiograph (4892x4020, 16-bit range), segmentation excluded.

Prints the median time per stage and, as the ratio the project tracks, the pipeline's total against
a baseline measured in the same process: one plain cv2.resize of the full image to 1024x1024.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from cxr_studio.core.pipeline import PreprocessSpec, preprocess
from cxr_studio.core.imaging.radiograph import Radiograph


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    h, w = 4892, 4020
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u16 = (32768 + 20000 * np.sin(xx / 300) * np.cos(yy / 410) + rng.normal(0, 800, (h, w))).clip(0, 65535)
    rg = Radiograph((u16.astype(np.uint16).astype(np.float32) / 65535.0))
    mask = np.zeros((h, w), bool)
    mask[600:4300, 400:3700] = True
    spec = PreprocessSpec()

    base = _median_ms(lambda: cv2.resize(rg.pixels, (1024, 1024), interpolation=cv2.INTER_AREA), args.repeats)
    results = []
    total = _median_ms(lambda: results.append(preprocess(rg, spec, lung_mask=mask)), args.repeats)
    stages = {k: statistics.median(r.timings[k] for r in results) * 1000.0 for k in results[0].timings}
    print(f"image {w}x{h} float32 from 16-bit, spec: crop to lungs -> 1024 -> CLAHE -> 227x227x3")
    for k, v in stages.items():
        print(f"  {k:<14} {v:8.1f} ms")
    print(f"pipeline total (segmentation excluded): {total:8.1f} ms")
    print(f"baseline (one cv2.resize to 1024):      {base:8.1f} ms")
    print(f"ratio pipeline / baseline:              {total / base:8.2f}x")


if __name__ == "__main__":
    main()
