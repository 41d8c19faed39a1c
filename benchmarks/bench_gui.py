"""GUI responsiveness, offscreen with a real repaint (the view's viewport ``repaint()``), on this CPU.

1. threshold change on a 4020x4892 radiograph: the LUT path the app uses (session.threshold ->
   thresholded 256-entry LUT on the overlay item -> repaint), vs a baseline that recomputes the RGBA
   overlay at full resolution for each change (``render.overlay`` + setImage). Target < 16 ms.
2. channel switch with cached activations: session.channel -> channel map on the GUI thread ->
   overlay image -> repaint, vs the baseline of computing the full-resolution map
   (``views.compute_heatmap``) and showing it. Target < 30 ms.
3. open-image-to-first-heatmap for cxrnet (paper size) and VGG19 (weights="none"), model already
   loaded: the whole app path (worker: preprocessing, forward, ranking; GUI: drawing), vs the bare
   core calls for the same work in this process (ratio = GUI overhead).

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py [--quick]

Numbers depend on the machine's load; each is the median of several runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any, Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("CXR_STUDIO_SETTINGS", os.path.join(tempfile.mkdtemp(), "bench.ini"))

import numpy as np  # noqa: E402


def radiograph(h: int = 4892, w: int = 4020) -> tuple[Any, np.ndarray]:
    """A smooth synthetic radiograph of the Shenzhen size and a lung mask."""
    import cv2

    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.imaging.radiograph import Radiograph

    ph = make_phantom(1, size=1024, abnormal=True)
    px = cv2.resize(ph.image, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(ph.lung_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return Radiograph(px.astype(np.float32), {"format": "synthetic"}), mask


def wait(app: Any, cond: Callable[[], bool], timeout: float = 600.0) -> None:
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("benchmark step did not finish")


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def loaded_like(arch: str, **kw: Any) -> Any:
    """A LoadedCheckpoint-like bundle around a freshly built model (no file needed)."""
    from cxr_studio.core.models import build_model
    from cxr_studio.core.pipeline import PreprocessSpec

    model = build_model(arch, **kw).eval()
    spec = PreprocessSpec.from_dict(dict(model.default_preprocess))
    return SimpleNamespace(model=model, arch=arch, arch_kwargs=kw, spec=spec, class_names=["normal", "abnormal"],
                           path=None, sha256=None, provenance={})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, skip VGG19")
    args = ap.parse_args(argv)
    reps = 8 if args.quick else 20
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from cxr_studio.core.runtime.engine import ModelManager, Worker
    from cxr_studio.core.render import overlay, to_uint8
    from cxr_studio.core.runtime.session import Session
    from cxr_studio.core.inspect.views import compute_forward, compute_heatmap
    from cxr_studio.gui.main_window import MainWindow

    rad, mask = radiograph()
    print(f"radiograph {rad.pixels.shape[1]}x{rad.pixels.shape[0]}, torch threads: {__import__('torch').get_num_threads()}")
    w = MainWindow(Session(), Worker(), ModelManager("cpu"))
    w.resize(1500, 950)
    w.show()
    s, c = w.session, w.controller
    small = loaded_like("cxrnet", width=0.25, fc_width=256)
    s.add_model("cxrnet-narrow", small)
    w.open_radiograph(rad, mask, "benchmark")
    wait(app, lambda: s.heatmap is not None and w.bridge.pending == 0)
    view = w.view

    # 1. threshold ---------------------------------------------------------------------------
    lut_t = []
    for i in range(reps):
        t0 = time.perf_counter()
        s.threshold = 0.2 + 0.6 * (i % 7) / 7 + 1e-4 * i
        view.graphics.viewport().repaint()
        lut_t.append(time.perf_counter() - t0)
    base_t = []
    full = s.preprocessed.geometry.map_to_original(s.heatmap.map_input)
    for i in range(max(3, reps // 4)):
        t0 = time.perf_counter()
        rgb = overlay(rad.pixels, full, s.colormap, 0.2 + 0.1 * i, s.opacity)
        view.base.setImage(rgb, levels=(0, 255), autoLevels=False)
        view.graphics.viewport().repaint()
        base_t.append(time.perf_counter() - t0)
    view.base.setImage(to_uint8(rad.pixels), levels=(0, 255), autoLevels=False)
    print(f"threshold change: {ms(lut_t):.1f} ms/update (LUT path; target < 16 ms); "
          f"recompute-overlay baseline {ms(base_t):.1f} ms; ratio {ms(base_t) / ms(lut_t):.1f}x faster")

    # 2. channel switch ----------------------------------------------------------------------------
    n = c.activation().shape[0]
    sw_t = []
    for i in range(reps):
        t0 = time.perf_counter()
        s.channel = (s.channel + 1) % n
        view.graphics.viewport().repaint()
        sw_t.append(time.perf_counter() - t0)
    assert w.bridge.pending == 0, "a channel switch must not need the worker"
    fwd = s.cached_forward()
    base_c = []
    for i in range(max(3, reps // 4)):
        t0 = time.perf_counter()
        hm = compute_heatmap(small, s.preprocessed, fwd, s.layer, i % n, "activation", None, s.scale, s.ranking)
        view.heat.setImage(hm.map_original, levels=(0, 1), autoLevels=False)
        view.graphics.viewport().repaint()
        base_c.append(time.perf_counter() - t0)
    s.channel = (s.channel + 1) % n
    print(f"channel switch (cached activations): {ms(sw_t):.1f} ms (target < 30 ms); full-resolution "
          f"compute_heatmap baseline {ms(base_c):.1f} ms; ratio {ms(base_c) / ms(sw_t):.1f}x faster")

    # 3. open -> first heatmap ------------------------------------------------------------------------
    archs = [("cxrnet", {})] + ([] if args.quick else [("vgg19", {"weights": "none"})])
    for arch, kw in archs:
        t0 = time.perf_counter()
        loaded = loaded_like(arch, **kw)
        build = time.perf_counter() - t0
        s.add_model(arch, loaded)
        s.current_model_id = arch
        wait(app, lambda: w.bridge.pending == 0)
        gui_t, core_t = [], []
        for _ in range(2 if args.quick else 3):
            drawn: list[float] = []
            w.heatmap_drawn.connect(lambda: drawn.append(time.perf_counter()))
            t0 = time.perf_counter()
            w.open_radiograph(rad, mask, "benchmark")
            wait(app, lambda: bool(drawn))
            view.graphics.viewport().repaint()
            gui_t.append(time.perf_counter() - t0)
            w.heatmap_drawn.disconnect()
            wait(app, lambda: w.bridge.pending == 0)
            from cxr_studio.core.pipeline import preprocess

            t0 = time.perf_counter()
            p = preprocess(rad, s.effective_spec(arch), lung_mask=mask)
            f = compute_forward(loaded, p)
            compute_heatmap(loaded, p, f, s.layer, "strongest", "activation", None, "channel", "max")
            core_t.append(time.perf_counter() - t0)
        print(f"open image -> first heatmap, {arch}: {ms(gui_t):.0f} ms in the app; bare core calls "
              f"{ms(core_t):.0f} ms; ratio {ms(gui_t) / ms(core_t):.2f} (model build {build:.1f} s, not counted)")
        s.remove_model(arch)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
