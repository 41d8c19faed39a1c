"""``cxr-studio-train segmenter``: train the lung U-Net behind ``segment_lungs(method="auto")``.

Dice + BCE loss, augmentation (rotation, scaling, shift, contrast, gamma), seeded split per dataset
(70/15/15, written to ``split.json``), progress bar, best-by-validation-Dice checkpoint (``best.pt``),
``last.pt`` with optimizer state for ``--resume``, and at the end the Dice on the held-out test images
at their full mask resolution, per dataset (``metrics.json``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.models.checkpoint import load_checkpoint, save_checkpoint
from ..core.lungs import dice
from ..core.models import build_model
from ..core.models.unet import SEGMENTER_SPEC
from .cli import subcommand
from .segmenter_data import (
    augment,
    find_mask_pairs,
    load_arrays,
    manifest_hash,
    read_mask,
    split_pairs,
    write_split,
)
from ..core.atomic import strict_json, write_text_atomic
from ..core.imaging.io import read_image
from ..core.lungs.unet import segment_unet

DEFAULTS: dict[str, Any] = {
    "base": 12, "depth": 4, "size": 256, "epochs": 30, "batch_size": 8, "lr": 2e-3,
    "weight_decay": 1e-4, "seed": 0, "bce_weight": 0.5,
}


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + eps)).mean()


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(x)[:, None] - 0.5) / 0.5  # the spec's "center" normalisation


def _val_dice(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray) -> float:
    model.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(xs), 16):
            prob = torch.sigmoid(model(_to_tensor(xs[i:i + 16])))[:, 0].numpy()
            scores += [dice(p > 0.5, y > 0.5) for p, y in zip(prob, ys[i:i + 16])]
    return float(np.mean(scores)) if scores else 0.0


def train(data: list[str], out: Path, cfg: dict[str, Any], resume: bool = False, log=print) -> dict[str, Any]:
    """Train; returns the metrics written to ``out/metrics.json``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg["seed"])
    pairs = find_mask_pairs(data)
    split = split_pairs(pairs, cfg["seed"])
    write_split(split, out / "split.json")
    log(f"{len(pairs)} images with lung masks: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))
    spec = SEGMENTER_SPEC.replace(input_size=cfg["size"], intermediate_size=cfg["size"])
    xtr, ytr = load_arrays(split["train"], spec)
    xva, yva = load_arrays(split["val"], spec)
    model = build_model("lung_unet", base=cfg["base"], depth=cfg["depth"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"])
    start, best = 0, -1.0
    last = out / "last.pt"
    if resume and last.exists():
        ck = load_checkpoint(last)
        model.load_state_dict(ck.model.state_dict())
        st = ck.training_state or {}
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, best = int(st["epoch"]) + 1, float(st["best"])
        log(f"resuming after epoch {start} (best val Dice {best:.4f})")
    rng = np.random.default_rng(cfg["seed"] + start)
    prov = {"recipe": "segmenter", "seed": cfg["seed"], "config": dict(cfg),
            "data_manifest_hash": manifest_hash(pairs)}
    for epoch in range(start, cfg["epochs"]):
        model.train()
        order = rng.permutation(len(xtr))
        losses = []
        t0 = time.perf_counter()
        bar = tqdm(range(0, len(order), cfg["batch_size"]), desc=f"epoch {epoch + 1}/{cfg['epochs']}", leave=False)
        for i in bar:
            idx = order[i:i + cfg["batch_size"]]
            aug = [augment(xtr[j], ytr[j], rng) for j in idx]
            x = _to_tensor(np.stack([a[0] for a in aug]))
            y = torch.from_numpy(np.stack([a[1] for a in aug]))[:, None]
            logits = model(x)
            loss = cfg["bce_weight"] * F.binary_cross_entropy_with_logits(logits, y) + dice_loss(logits, y)
            if not torch.isfinite(loss):
                raise ValueError(f"The loss became {loss.item()} in epoch {epoch + 1}; lower the learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        sched.step()
        vd = _val_dice(model, xva, yva)
        log(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}  val Dice {vd:.4f}  ({time.perf_counter() - t0:.0f} s)")
        with open(out / "log.csv", "a") as f:
            f.write(f"{epoch + 1},{np.mean(losses):.5f},{vd:.5f}\n")
        if vd > best:
            best = vd
            save_checkpoint(out / "best.pt", model, preprocess=spec, provenance={**prov, "metrics": {"val_dice": vd, "epoch": epoch + 1}})
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "best": best}
        save_checkpoint(last, model, preprocess=spec, provenance=prov, training_state=state)
    metrics = evaluate(out / "best.pt", split["test"], log=log)
    metrics["val_dice"] = best
    write_text_atomic(out / "metrics.json", strict_json(metrics, indent=1))
    return metrics


def evaluate(checkpoint: Path, pairs, log=print) -> dict[str, Any]:
    """Dice of the cleaned, full-resolution prediction against each pair's mask, per dataset."""
    loaded = load_checkpoint(checkpoint)
    per: dict[str, list[float]] = {}
    for p in pairs:
        pred = segment_unet(read_image(p.image).pixels, loaded).mask
        per.setdefault(p.dataset, []).append(dice(pred, read_mask(p)))
    res = {ds: {"n": len(v), "mean": float(np.mean(v)), "median": float(np.median(v)), "min": float(np.min(v))}
           for ds, v in per.items()}
    for ds, r in res.items():
        log(f"test {ds}: n={r['n']} Dice mean {r['mean']:.4f} median {r['median']:.4f} min {r['min']:.4f}")
    return {"test": res}


@subcommand("segmenter", help="train the lung U-Net segmenter on NLM / phantom lung masks")
def _setup(p: argparse.ArgumentParser):
    p.add_argument("--data", nargs="+", required=True, help="NLM Montgomery/Shenzhen or phantom folders")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    for k, v in DEFAULTS.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v, help=f"default {v}")

    def run(a: argparse.Namespace) -> int:
        cfg = {k: getattr(a, k) for k in DEFAULTS}
        train(a.data, a.out, cfg, resume=a.resume)
        return 0

    return run
