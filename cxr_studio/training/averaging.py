"""Weight averaging for ``fit`` (recipe field ``ema_epochs``): an exponential moving average of the
weights and of the BatchNorm statistics, updated after every optimizer step, is the model that is
validated, selected and saved (``best.pt``, ``last.pt``); the raw weights keep training.

PyTorch's own ``AveragedModel`` with ``get_ema_multi_avg_fn`` does the averaging (buffers included);
this module only chooses the decay from the recipe and keeps the state ``--resume`` needs. The decay
per step is ``1 - 1 / (ema_epochs * steps_per_epoch)``: the average's memory is about ``ema_epochs``
epochs whatever the data set's size or the batch size. The first update copies the weights.
"""
from __future__ import annotations

import math
from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def steps_per_epoch(n_images: int, batch_size: int, world_size: int = 1, max_steps: int = 0) -> int:
    """Optimizer steps in one epoch of ``n_images`` (per process under DDP), at least 1."""
    steps = math.ceil(math.ceil(n_images / max(world_size, 1)) / max(batch_size, 1))
    return max(1, min(steps, max_steps) if max_steps else steps)


def ema_decay(ema_epochs: float, steps: int) -> float:
    """The per-step decay whose memory (1 / (1 - decay) steps) is ``ema_epochs`` epochs of ``steps``."""
    if ema_epochs <= 0:
        raise ValueError("ema_epochs must be above 0 for an average")
    return 1.0 - 1.0 / max(ema_epochs * steps, 1.0)


class WeightAverage:
    """The moving average of ``model``: ``update()`` after each step, ``module`` to evaluate and save."""

    def __init__(self, model: nn.Module, ema_epochs: float, steps: int) -> None:
        self.decay = ema_decay(ema_epochs, steps)
        self._avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        # its parameters keep requires_grad (no optimizer holds them): Grad-CAM on it needs the graph

    @property
    def module(self) -> nn.Module:
        """The averaged network (the same class as the trained one)."""
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged)

    def update(self, model: nn.Module) -> None:
        self._avg.update_parameters(model)

    def state(self, model: nn.Module) -> dict[str, Any]:
        """What ``last.pt`` keeps besides the averaged weights: the raw weights and the update count."""
        return {"raw_model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "updates": self.updates}

    def restore(self, model: nn.Module, averaged: nn.Module, state: dict[str, Any]) -> None:
        """Back from a checkpoint: ``averaged`` (the checkpoint's model) into the average, the raw
        weights of ``state`` (what ``state()`` wrote) into ``model``. A ``last.pt`` without an average
        never gets here: resuming it with ``ema_epochs`` set changes the recipe, which ``fit`` refuses."""
        self.module.load_state_dict(averaged.state_dict())
        model.load_state_dict(state["raw_model"])
        self._avg.n_averaged.fill_(int(state["updates"]))


def make_average(model: nn.Module, ema_epochs: float, steps: int) -> WeightAverage | None:
    """A ``WeightAverage`` when ``ema_epochs`` > 0, else None (the raw weights are what is saved)."""
    return WeightAverage(model, ema_epochs, steps) if ema_epochs > 0 else None


__all__ = ["WeightAverage", "ema_decay", "make_average", "steps_per_epoch"]
