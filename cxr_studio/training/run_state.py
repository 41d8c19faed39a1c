"""What ``last.pt`` stores besides the model: a run's ``training_state``, written and read here only.

``RunState.to_checkpoint()`` gives the dict ``fit`` hands to ``save_checkpoint(training_state=...)``;
``RunState.from_checkpoint(d)`` reads it back for ``--resume``. The keys have not changed since the
first runs (a ``last.pt`` from any earlier version resumes): ``optimizer``, ``scheduler``, ``epoch``,
``rng``, ``history``, ``best_score``, ``chance_epochs``, ``scaler`` and, in lesion-guided runs only,
``guidance``; runs with weight averaging (``ema_epochs``) add ``average`` (the raw weights and the
update count: ``last.pt``'s model is the average). Every value is a plain type or a tensor, so
``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RunState:
    """Where a run stands after its last finished epoch.

    The counters (``epoch``, ``history``, ``best_score``, ``chance_epochs``) move on every epoch; the
    state dicts of the optimizer, the lr schedule (``PlateauDrops``: best, bad_epochs, drops - the lr
    drops spent), the fp16 grad scaler and the lesion-guidance head, and torch's RNG state, are taken
    from the live objects when ``last.pt`` is written and put back into them on resume.
    """

    epoch: int = 0  # the last finished epoch; 0 before the first
    history: list[dict[str, Any]] = field(default_factory=list)  # one log.csv row per finished epoch
    best_score: float = -math.inf  # the best select_metric so far: best.pt's
    chance_epochs: int = 0  # epochs in a row with the training loss at chance (ln 2)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] = field(default_factory=dict)  # {} without an fp16 GradScaler
    rng: torch.Tensor | None = None  # saved for the record; each epoch reseeds from (seed, epoch)
    guidance: dict[str, Any] | None = None  # the lesion-guidance head (never part of the model)
    average: dict[str, Any] | None = None  # weight averaging: raw weights + update count (averaging.py)

    @property
    def best_epoch(self) -> int | None:
        """The epoch whose weights are in ``best.pt`` (the last row marked best), None before any."""
        marked = [int(r["epoch"]) for r in self.history if r.get("best")]
        return marked[-1] if marked else None

    def to_checkpoint(self) -> dict[str, Any]:
        """The ``training_state`` dict of ``last.pt``."""
        state: dict[str, Any] = {
            "optimizer": self.optimizer, "scheduler": self.scheduler, "epoch": self.epoch, "rng": self.rng,
            "history": self.history, "best_score": self.best_score, "chance_epochs": self.chance_epochs,
            "scaler": self.scaler,
        }
        if self.guidance is not None:
            state["guidance"] = self.guidance
        if self.average is not None:
            state["average"] = self.average
        return state

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> RunState:
        """A ``training_state`` read back (``optimizer``, ``scheduler`` and ``epoch`` are required)."""
        return cls(
            optimizer=state["optimizer"], scheduler=state["scheduler"], epoch=int(state["epoch"]),
            history=list(state.get("history", [])), best_score=float(state.get("best_score", -math.inf)),
            chance_epochs=int(state.get("chance_epochs", 0)), scaler=state.get("scaler") or {},
            rng=state.get("rng"), guidance=state.get("guidance"), average=state.get("average"),
        )
