"""What lesion guidance costs per training step: the time of one SGD step (forward, loss, backward,
optimizer step) with each guidance form, as a ratio to the unguided step on the same batch, in the
same process, same model (cxrnet as in the cxrnet-tb recipe: width 1.0, fc 128, 227 px, 3 channels).
Every image of the batch is abnormal with a lesion mask, so the ratio is the worst case; on the NLM
training split about a third of the images have an outline, and images without one cost nothing extra
in the ``gradcam`` / ``input_grad`` forms only when the whole batch lacks them.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_guidance.py [--batch 16] [--repeats 5] [--quick]
        [--device cuda] [--amp]

Times depend on the machine's load; steps of the forms are interleaved and each figure is a median.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cxr_studio.core.models import build_model
from cxr_studio.training.guidance import Guidance
from cxr_studio.training.loops import autocast_context
from cxr_studio.training.recipes import load_recipe

FORMS = ("none", "gradcam", "seg_head", "input_grad")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="batch 4, 2 repeats, width 0.25 (a smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA), as training with amp = true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    batch, repeats, width = (4, 2, 0.25) if args.quick else (args.batch, args.repeats, 1.0)
    recipe = load_recipe("cxrnet-tb-guided")
    torch.manual_seed(0)
    model = build_model("cxrnet", **dict(recipe.model_kwargs(), width=width)).to(dev)
    x = torch.randn(batch, 3, 227, 227, device=dev)
    y = torch.ones(batch, dtype=torch.long, device=dev)
    m = torch.zeros(batch, 227, 227, device=dev)
    m[:, 60:110, 40:90] = 1.0
    has = torch.ones(batch, dtype=torch.bool, device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    guides = {f: None if f == "none" else Guidance(load_recipe("cxrnet-tb-guided", sets=[f"lesion_guidance={f}"]),
                                                   model, dev) for f in FORMS}

    def step(form: str) -> float:
        t = time.perf_counter()
        g = guides[form]
        with autocast_context(dev, args.amp):
            if g is None:
                loss = F.cross_entropy(model(x).float(), y)
            else:
                _, loss = g(model, x, y, (m, has), F.cross_entropy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t

    for f in FORMS:  # warm-up
        step(f)
    times: dict[str, list[float]] = {f: [] for f in FORMS}
    for _ in range(repeats):
        for f in FORMS:
            times[f].append(step(f))
    base = statistics.median(times["none"])
    print(f"cxrnet width {width}, fc {recipe.fc_width}, 227 px, batch {batch}, {torch.get_num_threads()} threads, "
          f"{dev}{' (bf16 autocast)' if args.amp else ''}, median of {repeats}")
    for f in FORMS:
        med = statistics.median(times[f])
        print(f"  {f:<11} {med * 1000:8.1f} ms/step   x{med / base:.2f} of the unguided step")


if __name__ == "__main__":
    main()
