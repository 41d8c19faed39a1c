"""Saliency methods of ``cxr-studio-train localize`` on the shipped demo model (cxrnet, 227x227),
each against its library baseline measured in the same process (medians, alternating runs):

- occlusion (window 32, stride 16) and integrated gradients (32 steps): ours (batched) vs Captum;
- Grad-CAM at relu5: ``core.saliency.grad_cam`` vs pytorch-grad-cam's GradCAM;
- the time per map of every method of ``METHODS`` (no baseline: pytorch-grad-cam itself for four).

Prints ratios ours/theirs (target <= 1). Captum is optional (``pip install captum``): its rows are
skipped without it. Noisy on a shared CPU: the ratios are the point.

    .venv/bin/python benchmarks/bench_saliency_methods.py [--repeats N] [--threads T]
"""
from __future__ import annotations

import argparse
import time

import torch

from bench_inspection import paired_medians


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from cxr_studio.core.models.checkpoint import load_checkpoint
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.pipeline import preprocess
    from cxr_studio.core.resources import DEMO_MODEL, find_resource
    from cxr_studio.core.inspect.saliency import grad_cam
    from cxr_studio.core.inspect.saliency_methods import METHODS, saliency_map
    from cxr_studio.core.inspect.saliency_perturb import integrated_gradients, occlusion_attribution

    ck = load_checkpoint(find_resource(DEMO_MODEL))
    model = ck.model
    ph = make_phantom(123_456, 512, abnormal=True)
    pre = preprocess(ph.radiograph(), ck.spec)
    x = pre.tensor()
    try:
        from captum.attr import IntegratedGradients, Occlusion

        occ = Occlusion(model)
        ig = IntegratedGradients(model)
        b, o = paired_medians(
            lambda: occ.attribute(x, target=1, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16),
                                  perturbations_per_eval=32),
            lambda: occlusion_attribution(model, x, 1, 32, 16, batch_size=32), a.repeats)
        print(f"occlusion   captum {b:.3f}s  ours {o:.3f}s  ratio {o / b:.2f}")
        b, o = paired_medians(lambda: ig.attribute(x, target=1, n_steps=32, internal_batch_size=16),
                              lambda: integrated_gradients(model, x, 1, 32, 16), a.repeats)
        print(f"int. grads  captum {b:.3f}s  ours {o:.3f}s  ratio {o / b:.2f}")
    except ImportError:
        print("captum not installed: occlusion / integrated-gradients baselines skipped")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def theirs() -> object:
        with GradCAM(model=model, target_layers=[model.get_submodule("features.relu5")]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])

    b, o = paired_medians(theirs, lambda: grad_cam(model, x, "relu5", 1), a.repeats)
    print(f"grad-cam    library {b:.4f}s  ours {o:.4f}s  ratio {o / b:.2f}")
    for m in METHODS:
        saliency_map(model, x, m, "relu5", 1, geometry=pre.geometry, lung_mask=ph.lung_mask)
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            saliency_map(model, x, m, "relu5", 1, geometry=pre.geometry, lung_mask=ph.lung_mask)
        print(f"{m:22s} {(time.perf_counter() - t0) / a.repeats:.3f} s/map")


if __name__ == "__main__":
    main()
