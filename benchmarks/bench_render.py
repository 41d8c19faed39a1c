"""Threshold change on a full-resolution (4892 x 4020, a Montgomery original) heat map.

LUT path (what the GUI does): ``threshold_lut`` + pyqtgraph ``ImageItem.setLookupTable`` + the
item's ``render()`` on a uint8 LUT-index image (``render.lut_index``, computed once per map).
Baseline: recompute the RGBA overlay pixels from the float map (``apply_lut`` with the thresholded
table), and, for reference, the full export composite (``render.overlay``).
Both run in this process; the script prints ms per update (median) and the ratio.

    .venv/bin/python benchmarks/bench_render.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

H, W = 4892, 4020


def median_ms(fn: Callable[[float], object], thresholds: list[float]) -> float:
    times = []
    for t in thresholds:
        t0 = time.perf_counter()
        fn(t)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()

    from cxr_studio.core import render

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    heat = np.exp(-((xx - 2600) ** 2 + (yy - 1800) ** 2) / (2 * 700.0**2)).astype(np.float32)
    heat += 0.05 * rng.random((H, W), dtype=np.float32)
    heat = np.clip(heat, 0, 1)
    gray = np.clip(0.5 + 0.2 * np.sin(xx / 300.0), 0, 1).astype(np.float32)
    del xx, yy
    base = render.colormap_lut("jet")
    thresholds = list(np.linspace(0.05, 0.95, args.repeats))

    # LUT path: the GUI keeps the index image and swaps the table
    from pyqtgraph.Qt import QtWidgets
    import pyqtgraph as pg

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    pg.setConfigOptions(imageAxisOrder="row-major")
    t0 = time.perf_counter()
    index = render.lut_index(heat)
    once_ms = (time.perf_counter() - t0) * 1000.0
    item = pg.ImageItem(axisOrder="row-major")
    item.setImage(index, levels=render.INDEX_LEVELS, autoLevels=False, lut=base)
    item.render()

    def lut_only(t: float) -> None:
        render.threshold_lut(base, t)

    def gui_update(t: float) -> None:
        item.setLookupTable(render.threshold_lut(base, t))
        item.render()

    def gui_update_converted(t: float) -> None:
        gui_update(t)
        item.qimage.convertToFormat(pg.QtGui.QImage.Format.Format_ARGB32_Premultiplied)

    def recompute_rgba(t: float) -> None:
        render.apply_lut(heat, render.threshold_lut(base, t))

    def recompute_overlay(t: float) -> None:
        render.overlay(gray, heat, "jet", t, 0.5)

    lut_ms = median_ms(lut_only, thresholds)
    gui_ms = median_ms(gui_update, thresholds)
    conv_ms = median_ms(gui_update_converted, thresholds)
    rgba_ms = median_ms(recompute_rgba, thresholds[: max(3, args.repeats // 3)])
    over_ms = median_ms(recompute_overlay, thresholds[:3])
    print(f"map {H}x{W} ({H * W / 1e6:.1f} MP), median of {args.repeats} threshold changes")
    print(f"  lut_index once per map (not per update):     {once_ms:9.2f} ms")
    print(f"  threshold_lut only:                          {lut_ms:9.3f} ms")
    print(f"  LUT path (threshold_lut + setLookupTable + ImageItem.render): {gui_ms:9.2f} ms  (target < 10 ms)")
    print(f"  LUT path + full Indexed8 -> ARGB32 conversion (upper bound of Qt's paint): {conv_ms:9.2f} ms")
    print(f"  baseline: recompute RGBA from the map (apply_lut): {rgba_ms:9.2f} ms")
    print(f"  reference: full overlay composite (export path):   {over_ms:9.2f} ms")
    print(f"  ratio baseline / LUT path: {rgba_ms / gui_ms:.1f}x; with the conversion: {rgba_ms / conv_ms:.1f}x")
    del app


if __name__ == "__main__":
    main()
