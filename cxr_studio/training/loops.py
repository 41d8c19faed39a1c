"""The inner loops: one training epoch, prediction over a dataset, the optimizer and the
val-accuracy plateau schedule (lr / 10 at most N times)."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .ddp import DistInfo, all_finite
from .recipes import Recipe
from .tensors import collate

CHANCE_LOSS = math.log(2.0)
POSTFIX_EVERY = 8  # steps between progress-bar loss/accuracy updates (each waits for the GPU)


class TrainingError(ValueError):
    """Training cannot go on (NaN loss, out of memory, a run folder that does not match)."""


class PlateauDrops:
    """Multiply the learning rate by ``factor`` when the watched metric has not improved for
    ``patience`` epochs, at most ``max_drops`` times (the paper's schedule)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int, max_drops: int) -> None:
        self.optimizer = optimizer
        self.factor, self.patience, self.max_drops = factor, patience, max_drops
        self.best = -math.inf
        self.bad_epochs = 0
        self.drops = 0

    def step(self, value: float) -> bool:
        """Record one epoch's metric; True when the learning rate was just dropped."""
        if value > self.best + 1e-9:
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            for g in self.optimizer.param_groups:
                g["lr"] *= self.factor
            self.drops += 1
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": float(self.best), "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best, self.bad_epochs, self.drops = float(d["best"]), int(d["bad_epochs"]), int(d["drops"])


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """Two groups: the new head (``model.new_layers``) at lr x head_lr_factor, the rest at lr."""
    head_paths = [model.layer_names[n] for n in getattr(model, "new_layers", []) if n in model.layer_names]
    head, body = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (head if any(name == h or name.startswith(h + ".") for h in head_paths) else body).append(p)
    groups = [{"params": body, "lr": recipe.lr, "name": "transferred"}]
    if head:
        groups.append({"params": head, "lr": recipe.lr * recipe.head_lr_factor, "name": "new"})
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def make_loader(ds: Dataset, batch_size: int, sampler: Any = None, workers: int = 0) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      drop_last=False, persistent_workers=False, collate_fn=collate)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``. A batch whose channels are one channel widened as a view (``CachedImages``)
    crosses as that one channel and is widened there again, so a third of the bytes travel; to a CUDA
    GPU from page-locked memory, so the copy runs while the host goes on."""
    if x.device == device:
        return x
    widened = x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 0
    src = x[:, :1] if widened else x
    if device.type == "cuda" and src.device.type == "cpu":
        src = src.contiguous().pin_memory()
    out = src.to(device, non_blocking=True)
    return out.expand(-1, x.shape[1], -1, -1) if widened else out


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """What mixed precision computes in: bf16 on CUDA when ``amp`` (fp16 where the GPU lacks bf16,
    which then needs a grad scaler); None (full precision) elsewhere."""
    if device.type == "cuda" and amp:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast_context(device: torch.device, amp: bool) -> Any:
    """Autocast to ``amp_dtype`` on CUDA when ``amp``; a no-op elsewhere."""
    dtype = amp_dtype(device, amp)
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    amp: bool,
    scaler: Any,
    info: DistInfo,
    max_steps: int = 0,
    bar: Any = None,
    loss_fn: Any = None,
    guidance: Any = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass; raises TrainingError on a non-finite loss (before the weights change).
    ``guidance`` (training/guidance.py) adds the lesion term to batches ``(x, y, m, has)``;
    ``after_step()`` runs after every optimizer step (the weight average's update)."""
    loss_fn = loss_fn or F.cross_entropy
    model.train()
    if guidance is not None:
        guidance.reset_stats()
    total, steps = 0, 0
    # sums stay on the device (read once per progress update): no wait for the GPU after each step
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    for batch in loader:
        x, y = batch[0], batch[1]
        x = to_device(x, device)
        y = y.to(device, non_blocking=True)
        with autocast_context(device, amp):
            if guidance is not None:
                logits, loss = guidance(model, x, y, batch[2:], loss_fn)
            else:
                logits = model(x)
                loss = loss_fn(logits.float(), y)
        if not all_finite(loss, info):
            raise TrainingError(
                f"the loss became {float(loss.detach()):.4g} (not finite) at step {steps + 1}; "
                "training stopped and the last good checkpoint was kept. Try a lower learning rate "
                "(--set lr=...)."
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        n = y.shape[0]
        total += n
        loss_sum += (loss if guidance is None else guidance.last_loss).detach().float() * n  # the CE alone
        correct += (logits.detach().argmax(1) == y).sum()
        steps += 1
        if bar is not None:
            bar.update(n)
            if steps % POSTFIX_EVERY == 1:
                bar.set_postfix(loss=f"{float(loss_sum) / total:.4f}", acc=f"{int(correct) / total:.3f}")
        if max_steps and steps >= max_steps:
            break
    return {"train_loss": float(loss_sum) / max(total, 1), "train_acc": int(correct) / max(total, 1), "steps": steps,
            "images": total, **(guidance.stats() if guidance is not None else {})}


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, device: torch.device, batch_size: int = 64,
            amp: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, probability of class 1, mean cross-entropy) over a dataset, in order."""
    was_training = model.training
    model.eval()
    labels, probs, loss_sum = [], [], 0.0
    try:
        for x, y in make_loader(ds, batch_size):
            x, y = to_device(x, device), y.to(device)
            with autocast_context(device, amp):
                logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            probs.append(torch.softmax(logits, 1)[:, 1].cpu().numpy())
            labels.append(y.cpu().numpy())
    finally:
        model.train(was_training)
    n = sum(len(a) for a in labels)
    if n == 0:
        return np.zeros(0, int), np.zeros(0), float("nan")
    return np.concatenate(labels), np.concatenate(probs), loss_sum / n
