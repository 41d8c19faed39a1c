"""Bring your own model: a ~100 MB state dict (torchvision ResNet-50, 25.6M parameters, random
weights, 3 classes, saved as ``{"state_dict": {"module.<key>": ...}}`` as DataParallel training
scripts do) opened with ``open_model(path, arch="resnet50")`` up to the first heatmap (one forward
recording the deepest layer + Grad-CAM), against a bare forward pass of the same model in the same
process (``torch.no_grad``, eval mode, batch 1, 224 px).

Reported: median seconds of each over ``--repeats`` runs, alternating, after one warm-up; the
ratio load-to-first-heatmap / bare forward; and the seconds beyond one forward + one Grad-CAM pass
(what loading itself costs; the issue's target is under 2 s). The preprocessing of the image is
done once outside both timings (it does not depend on the model).

    .venv/bin/python benchmarks/bench_model_load.py [--repeats N] [--threads T]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from cxr_studio.core.models.importers import open_model
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.pipeline import preprocess
    from cxr_studio.core.inspect.saliency import grad_cam
    from cxr_studio.core.inspect.views import compute_forward, compute_heatmap

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(num_classes=3).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
        size_mb = path.stat().st_size / 1e6
        loaded = open_model(path, arch="resnet50")
        pre = preprocess(make_phantom(0, size=512).radiograph(), loaded.spec.replace(segmentation="none"))
        x = torch.as_tensor(pre.model_input)[None]

        def bare() -> None:
            with torch.no_grad():
                ref(x)

        def bare_cam() -> None:  # forward + Grad-CAM on the already loaded model
            grad_cam(ref, x[0], "layer4", None)

        def load_to_heatmap() -> None:
            ld = open_model(path, arch="resnet50")
            fwd = compute_forward(ld, pre, [ld.model.deepest_layer])
            compute_heatmap(ld, pre, fwd, ld.model.deepest_layer, method="gradcam")

        for fn in (bare, bare_cam, load_to_heatmap):
            fn()
        times: dict[str, list[float]] = {"bare": [], "bare_cam": [], "load": []}
        for _ in range(a.repeats):
            for key, fn in (("bare", bare), ("bare_cam", bare_cam), ("load", load_to_heatmap)):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"state dict: {size_mb:.1f} MB (resnet50, 3 classes), input 224, threads {torch.get_num_threads()}")
    print(f"bare forward              {med['bare']:.3f} s")
    print(f"forward + Grad-CAM        {med['bare_cam']:.3f} s")
    print(f"open_model -> 1st heatmap {med['load']:.3f} s")
    print(f"ratio load-to-heatmap / bare forward: {med['load'] / med['bare']:.2f}")
    print(f"beyond forward + Grad-CAM (the loading itself): {med['load'] - med['bare'] - med['bare_cam']:.3f} s "
          "(forward counted twice: compute_forward, then Grad-CAM's own pass)")


if __name__ == "__main__":
    main()
