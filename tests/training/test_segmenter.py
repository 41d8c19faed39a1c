"""The lung U-Net trainer on phantoms: loss goes down, resume continues, checkpoints segment."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cxr_studio.core.models.checkpoint import load_checkpoint
from cxr_studio.core.lungs.unet import clean_mask, confidence, segment_unet
from cxr_studio.core.phantoms.phantom import write_phantom_dataset
from cxr_studio.training.segmenter import train
from cxr_studio.training.segmenter_data import find_mask_pairs, split_pairs

CFG = {"base": 4, "depth": 3, "size": 64, "epochs": 3, "batch_size": 4, "lr": 1e-2,
       "weight_decay": 0.0, "seed": 0, "bce_weight": 0.5}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("ph") / "phantoms", n=14, seed=3, size=128)


def _losses(run):
    with open(run / "log.csv") as f:
        return [float(r[1]) for r in csv.reader(f)]


def test_short_training_lowers_the_loss_and_writes_metrics(phantoms, tmp_path):
    run = tmp_path / "run"
    metrics = train([str(phantoms)], run, dict(CFG, epochs=4), log=lambda *_: None)
    losses = _losses(run)
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert (run / "best.pt").exists() and (run / "split.json").exists()
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["phantoms"]["n"] >= 1
    loaded = load_checkpoint(run / "best.pt")
    assert loaded.arch == "lung_unet" and loaded.spec.input_size == 64
    assert loaded.provenance["data_manifest_hash"]


def test_resume_continues_from_last_epoch(phantoms, tmp_path):
    run = tmp_path / "run"
    train([str(phantoms)], run, dict(CFG, epochs=2), log=lambda *_: None)
    assert len(_losses(run)) == 2
    train([str(phantoms)], run, dict(CFG, epochs=3), resume=True, log=lambda *_: None)
    assert len(_losses(run)) == 3
    assert load_checkpoint(run / "last.pt").training_state["epoch"] == 2


def test_split_is_seeded_and_disjoint(phantoms):
    pairs = find_mask_pairs([phantoms])
    a, b = split_pairs(pairs, 1), split_pairs(pairs, 1)
    assert a == b
    names = [p.image.name for part in a.values() for p in part]
    assert len(names) == len(set(names)) == len(pairs)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no CXR_png"):
        find_mask_pairs([tmp_path])


def test_postprocessing_keeps_two_largest_and_fills_holes():
    m = np.zeros((64, 64), bool)
    m[10:50, 5:25] = True
    m[10:50, 35:60] = True
    m[30, 15] = False  # a hole
    m[2:4, 2:4] = True  # a speck
    out = clean_mask(m)
    assert out[30, 15] and not out[2, 2]
    prob = np.where(out, 0.95, 0.05).astype(np.float32)
    assert confidence(prob, out) > 0.9
    assert confidence(np.full_like(prob, 0.5), out) < 0.5


def test_segment_unet_returns_input_sized_mask(phantoms, tmp_path):
    run = tmp_path / "run"
    train([str(phantoms)], run, dict(CFG, epochs=1), log=lambda *_: None)
    res = segment_unet(np.random.default_rng(0).random((300, 217)).astype(np.float32), load_checkpoint(run / "best.pt"))
    assert res.mask.shape == (300, 217) and res.mask.dtype == bool
    assert res.method == "unet" and 0.0 <= res.confidence <= 1.0
