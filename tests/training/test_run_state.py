"""RunState is exactly last.pt's training_state: the keys the trainer has always written are read
back, and what it writes now is what it wrote before (so an older last.pt resumes)."""
from __future__ import annotations

import math

import torch

from cxr_studio.training.run_state import RunState

# the training_state of a last.pt as fit wrote it before RunState existed (key order included)
OLD_KEYS = ["optimizer", "scheduler", "epoch", "rng", "history", "best_score", "chance_epochs", "scaler"]


def _old_state(guided: bool) -> dict:
    st = {
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "scheduler": {"best": 0.75, "bad_epochs": 1, "drops": 2}, "epoch": 3, "rng": torch.get_rng_state(),
        "history": [{"epoch": 1, "best": 1}, {"epoch": 2, "best": 0}, {"epoch": 3, "best": 0}],
        "best_score": 0.75, "chance_epochs": 0, "scaler": {},
    }
    if guided:
        st["guidance"] = {"head": {"weight": torch.ones(2)}}
    return st


def test_an_older_training_state_round_trips(tmp_path) -> None:
    for guided in (False, True):
        old = _old_state(guided)
        state = RunState.from_checkpoint(old)
        assert (state.epoch, state.best_score, state.chance_epochs, state.best_epoch) == (3, 0.75, 0, 1)
        again = state.to_checkpoint()
        assert list(again) == OLD_KEYS + (["guidance"] if guided else [])
        torch.save(again, tmp_path / "st.pt")
        loaded = torch.load(tmp_path / "st.pt", weights_only=True)  # plain types and tensors only
        assert torch.equal(loaded["rng"], old["rng"])
        assert {k: v for k, v in loaded.items() if k not in ("rng", "guidance")} == \
            {k: v for k, v in old.items() if k not in ("rng", "guidance")}


def test_missing_optional_keys_take_their_defaults() -> None:
    st = RunState.from_checkpoint({"optimizer": {}, "scheduler": {}, "epoch": 1})
    assert st.history == [] and st.best_score == -math.inf and st.chance_epochs == 0
    assert st.scaler == {} and st.guidance is None and st.best_epoch is None
    assert "guidance" not in st.to_checkpoint()
