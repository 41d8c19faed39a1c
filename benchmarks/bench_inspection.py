"""Inspection speed, each against a baseline measured in the same process.

(a) Grad-CAM on torchvision VGG16 (random weights, seeded) at 224x224, batch 1, target relu5_3
    (features.29): ``cxr_studio.core.inspect.saliency.grad_cam`` vs ``pytorch_grad_cam.GradCAM``
    (target: ratio ours/theirs <= 1).
(b) One forward recording every layer (``forward_with_activations``) vs a plain forward without
    hooks (both under ``torch.no_grad``, eval mode, batch 1) for cxrnet (227), AlexNet, VGG16,
    VGG19 (224) from the models registry (random weights: ``init="kaiming"`` / ``weights="none"``).

Times are medians of ``--repeats`` runs after one warm-up, ours and the baseline alternating. Other processes sharing the CPU make
the absolute numbers noisy; the ratios are the point.

    .venv/bin/python benchmarks/bench_inspection.py [--repeats N] [--threads T] [--skip-forward]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch


def paired_medians(base: Callable[[], object], ours: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of ``base`` and ``ours``, run alternately (ABAB...) after one warm-up each,
    so that load from other processes hits both alike."""
    base()
    ours()
    tb: list[float] = []
    to: list[float] = []
    for _ in range(repeats):
        for fn, acc in ((base, tb), (ours, to)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(tb), statistics.median(to)


def bench_grad_cam(repeats: int) -> None:
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cxr_studio.core.inspect.saliency import grad_cam

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    target = vgg.features[29]

    def theirs() -> object:
        with GradCAM(model=vgg, target_layers=[target]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(3)])

    def ours() -> object:
        return grad_cam(vgg, x, "features.29", class_index=3)

    t_ref, t_ours = paired_medians(theirs, ours, repeats)
    print("(a) Grad-CAM, VGG16 relu5_3, 224x224, batch 1")
    print(f"    pytorch-grad-cam GradCAM : {t_ref * 1000:8.1f} ms")
    print(f"    cxr_studio grad_cam      : {t_ours * 1000:8.1f} ms")
    print(f"    ratio ours/theirs        : {t_ours / t_ref:8.2f}  (target <= 1)")


def bench_forward(repeats: int) -> None:
    from cxr_studio.core.inspect.activations import forward_with_activations
    from cxr_studio.core.models.registry import build_model

    nets = [
        ("cxrnet", {"init": "kaiming"}, 227),
        ("alexnet", {"weights": "none"}, 224),
        ("vgg16", {"weights": "none"}, 224),
        ("vgg19", {"weights": "none"}, 224),
    ]
    print("(b) forward recording every layer vs plain forward, batch 1")
    print(f"    {'model':<8} {'layers':>6} {'plain ms':>9} {'all-acts ms':>12} {'ratio':>6}")
    for name, kw, size in nets:
        torch.manual_seed(0)
        model = build_model(name, **kw).eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))

        def plain() -> object:
            with torch.no_grad():
                return model(x)

        t_plain, t_all = paired_medians(plain, lambda: forward_with_activations(model, x), repeats)
        n = len(model.layer_names)
        print(f"    {name:<8} {n:>6} {t_plain * 1000:9.1f} {t_all * 1000:12.1f} {t_all / t_plain:6.2f}")
        del model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-forward", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), repeats={args.repeats}")
    bench_grad_cam(args.repeats)
    if not args.skip_forward:
        bench_forward(args.repeats)


if __name__ == "__main__":
    main()
