"""Training throughput: our fit loop (CachedImages -> DataLoader -> loops.train_epoch) against a
plain minimal PyTorch loop over the same cached uint8 tensors and the same model, in one process.

    .venv/bin/python benchmarks/bench_training.py [--n 128] [--batch 32] [--repeats 3] [--threads 1]
        [--device cuda] [--amp] [--workers 4]

Prints images/s of both and the ratio (target: ours >= 0.95x of the plain loop). Augmentation is
off in the headline pair (the plain loop has none); the augmented rate is printed as well, and the
rate with the weight average (recipe ``ema_epochs``) updated after every step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the plain loop keeps its data on the device)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA in both loops")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of our loop")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)

    from cxr_studio.core.models import build_model
    from cxr_studio.training.averaging import WeightAverage
    from cxr_studio.training.ddp import DistInfo
    from cxr_studio.training.loops import autocast_context, make_loader, make_optimizer, train_epoch
    from cxr_studio.training.recipes import load_recipe
    from cxr_studio.training.tensors import CachedImages

    recipe = load_recipe(a.recipe)
    spec = recipe.spec
    n = int(spec.input_size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.n, n, n), dtype=np.uint8)
    labels = rng.integers(0, 2, a.n)
    torch.manual_seed(0)
    model = build_model(recipe.arch, **recipe.model_kwargs()).to(dev)
    opt = make_optimizer(model, recipe)
    info = DistInfo()
    mean, std = (0.5, 0.5) if spec.normalization == "center" else (0.0, 1.0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    average = WeightAverage(model, 2.0, max(1, a.n // a.batch))

    def ours(augment: bool, ema: bool = False) -> float:
        ds = CachedImages(images, labels, spec, train=augment, rotation_deg=recipe.rotation_deg if augment else 0,
                          translate_px=recipe.translate_px if augment else 0)
        sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(0))
        t = time.perf_counter()
        train_epoch(model, make_loader(ds, a.batch, sampler, a.workers), opt, dev, amp=a.amp, scaler=None, info=info,
                    after_step=(lambda: average.update(model)) if ema else None)
        sync()
        return a.n / (time.perf_counter() - t)

    def plain() -> float:
        model.train()
        x_all = torch.from_numpy(images).to(dev)
        y_all = torch.from_numpy(labels).to(dev)
        perm = torch.randperm(a.n, generator=torch.Generator().manual_seed(0)).to(dev)
        sync()
        t = time.perf_counter()
        for i in range(0, a.n, a.batch):
            idx = perm[i : i + a.batch]
            x = ((x_all[idx].float() / 255.0 - mean) / std)[:, None].expand(-1, spec.channels, -1, -1)
            with autocast_context(dev, a.amp):
                loss = F.cross_entropy(model(x).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        return a.n / (time.perf_counter() - t)

    ours(False), plain()  # warm-up
    rows = {"plain": [], "ours": [], "ours+aug": [], "ours+ema": []}
    for _ in range(a.repeats):  # interleaved so load changes hit both alike
        rows["plain"].append(plain())
        rows["ours"].append(ours(False))
        rows["ours+aug"].append(ours(True))
        rows["ours+ema"].append(ours(False, ema=True))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    print(f"model {recipe.arch} {recipe.model_kwargs()}, {a.n} cached {n}x{n} images, batch {a.batch}, "
          f"{a.threads} thread(s), {dev}{' (bf16 autocast)' if a.amp else ''}, {a.workers} loader workers, "
          f"median of {a.repeats}")
    for k, v in med.items():
        print(f"  {k:9s} {v:8.1f} images/s")
    print(f"ratio ours / plain       = {med['ours'] / med['plain']:.3f}  (target >= 0.95)")
    print(f"ratio ours+aug / plain   = {med['ours+aug'] / med['plain']:.3f}")
    print(f"ratio ours+ema / ours    = {med['ours+ema'] / med['ours']:.3f}  (the weight average's cost)")


if __name__ == "__main__":
    main()
