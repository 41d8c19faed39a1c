"""fit: loss goes down, a small set is memorised, same seed -> same metrics, NaN stops cleanly,
the chance-level warning fires, run-folder artefacts are written."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from cxr_studio.core.models.checkpoint import load_checkpoint
from cxr_studio.training.fit import fit
from cxr_studio.training.loops import TrainingError, make_loader, make_optimizer
from cxr_studio.training.prepare import prepare_data

from train_helpers import tiny_recipe, write_shenzhen


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "S"
    return write_shenzhen(root, 24)


@pytest.fixture()
def cache_set(tmp_path_factory):
    return f"cache_dir={tmp_path_factory.getbasetemp() / 'cache'}"


def test_a_few_steps_lower_the_loss(blobs, tmp_path, cache_set) -> None:
    from cxr_studio.core.models import build_model

    torch.manual_seed(0)
    recipe = tiny_recipe(cache_set, "translate_px=0", "lr=0.05")
    data = prepare_data(recipe, [blobs], tmp_path, progress=False)
    model = build_model(recipe.arch, **recipe.model_kwargs())
    opt = make_optimizer(model, recipe)
    x, y = next(iter(make_loader(data.train, 16)))
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        after = float(F.cross_entropy(model(x), y))
    assert after < before * 0.8


def test_overfits_16_images_and_writes_the_run_folder(tmp_path, cache_set) -> None:
    root = write_shenzhen(tmp_path / "S16", 16, seed=50)
    recipe = tiny_recipe(cache_set, "split=1,0,0", "epochs=25", "translate_px=0", "optimizer=adam", "lr=0.001",
                         "lr_patience=100", "select_metric=val_loss")
    s = fit(recipe, [root], tmp_path / "run", progress=False)
    last = s["history"][-1]
    assert last["train_acc"] == 1.0 and last["train_loss"] < 0.1
    run = tmp_path / "run"
    for name in ("config.toml", "config.json", "split.json", "log.csv", "curves.png", "best.pt", "last.pt"):
        assert (run / name).exists(), name
    assert len((run / "log.csv").read_text().strip().splitlines()) == 26  # header + 25 epochs
    ck = load_checkpoint(run / "last.pt")
    assert ck.training_state["epoch"] == 25 and "optimizer" in ck.training_state
    assert ck.provenance["recipe"]["epochs"] == 25 and ck.spec.input_size == 91
    best = load_checkpoint(run / "best.pt")
    assert best.training_state is None
    assert json.loads((run / "config.json").read_text())["optimizer"] == "adam"


def test_same_seed_same_metrics(blobs, tmp_path, cache_set) -> None:
    recipe = tiny_recipe(cache_set, "epochs=2", "dropout=0.5", "rotation_deg=5")
    a = fit(recipe, [blobs], tmp_path / "a", progress=False)["history"]
    b = fit(recipe, [blobs], tmp_path / "b", progress=False)["history"]
    keys = ["train_loss", "train_acc", "val_loss", "val_acc", "val_auc"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    c = fit(tiny_recipe(cache_set, "epochs=2", "dropout=0.5", "rotation_deg=5", "seed=1"), [blobs],
            tmp_path / "c", progress=False)["history"]
    assert [r["train_loss"] for r in c] != [r["train_loss"] for r in a]


def test_a_given_split_file_keeps_its_seed_in_the_run_folder(blobs, tmp_path, cache_set) -> None:
    """Training with seed 5 on seed 0's split file: the run's split.json says the split is seed 0's."""
    fit(tiny_recipe(cache_set, "epochs=1", "max_steps_per_epoch=1"), [blobs], tmp_path / "ref", progress=False)
    ref = json.loads((tmp_path / "ref" / "split.json").read_text())
    assert ref["seed"] == 0
    fit(tiny_recipe(cache_set, "epochs=1", "max_steps_per_epoch=1", "seed=5"), [blobs], tmp_path / "run",
        progress=False, split_file=tmp_path / "ref" / "split.json")
    run = json.loads((tmp_path / "run" / "split.json").read_text())
    assert run["seed"] == 0 and {k: run[k] for k in ("train", "val", "test")} == {k: ref[k] for k in ("train", "val", "test")}
    hand = {k: ref[k] for k in ("train", "val", "test")}  # a split made by hand has no seed to keep
    (tmp_path / "hand.json").write_text(json.dumps(hand))
    fit(tiny_recipe(cache_set, "epochs=1", "max_steps_per_epoch=1", "seed=5"), [blobs], tmp_path / "run2",
        progress=False, split_file=tmp_path / "hand.json")
    assert json.loads((tmp_path / "run2" / "split.json").read_text())["seed"] is None


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(blobs, tmp_path, cache_set) -> None:
    calls = {"n": 0}

    def flaky_loss(logits, y):
        calls["n"] += 1
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if calls["n"] > 3 else loss  # epoch 1 has 3 batches of 8

    recipe = tiny_recipe(cache_set, "epochs=3", "batch_size=8")
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"epoch 2: .*not finite.*Last good checkpoint: .*last.pt"):
        fit(recipe, [blobs], run, progress=False, loss_fn=flaky_loss)
    ck = load_checkpoint(run / "last.pt")
    assert ck.training_state["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in ck.model.parameters())


def test_out_of_memory_names_the_batch_size_to_try(blobs, tmp_path, cache_set) -> None:
    calls = {"n": 0}

    def oom_in_epoch_2(logits, y):
        calls["n"] += 1
        if calls["n"] > 3:  # epoch 1 has 3 batches of 8
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return F.cross_entropy(logits, y)

    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"epoch 2: .*out of memory with batch_size=8; try --set batch_size=4"
                                            r".*Last good checkpoint: .*last.pt"):
        fit(tiny_recipe(cache_set, "epochs=3", "batch_size=8"), [blobs], run, progress=False, loss_fn=oom_in_epoch_2)
    assert load_checkpoint(run / "last.pt").training_state["epoch"] == 1


def test_huge_learning_rate_gives_a_clear_error(blobs, tmp_path, cache_set, capsys) -> None:
    from cxr_studio.training.cli import main

    from train_helpers import TINY_SETS

    rc = main(["fit", "--recipe", "demo", "--data", str(blobs), "--out", str(tmp_path / "r"), "--no-progress",
               *TINY_SETS, "--set", cache_set, "--set", "epochs=3", "--set", "lr=1e12"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not finite" in err and "lower learning rate" in err and "Traceback" not in err


def test_chance_level_warning(blobs, tmp_path, cache_set, capsys) -> None:
    def stuck(logits, y):  # exactly ln 2 whatever the weights
        return F.cross_entropy(logits * 0.0, y)

    fit(tiny_recipe(cache_set, "epochs=2", "chance_warn_epochs=2"), [blobs], tmp_path / "run", progress=False,
        loss_fn=stuck)
    err = capsys.readouterr().err
    assert "stayed at chance" in err and math.isclose(math.log(2), 0.6931, abs_tol=1e-4)


def test_fit_refuses_to_overwrite_a_run(blobs, tmp_path, cache_set) -> None:
    recipe = tiny_recipe(cache_set, "epochs=1", "max_steps_per_epoch=1")
    fit(recipe, [blobs], tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        fit(recipe, [blobs], tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="recipe differs"):
        fit(tiny_recipe(cache_set, "epochs=2", "max_steps_per_epoch=1", "lr=0.5"), [blobs], tmp_path / "run",
            resume=True, progress=False)


@pytest.mark.parametrize("watched", ["val_loss", "val_acc"])
def test_lr_drops_follow_the_plateau_metric(blobs, tmp_path, cache_set, watched) -> None:
    """Replaying the paper's rule (patience 1, x0.1) on the watched column gives the logged lr."""
    from cxr_studio.training.fit import _score

    s = fit(tiny_recipe(cache_set, "epochs=5", "lr_patience=1", "max_lr_drops=5", f"plateau_metric={watched}"),
            [blobs], tmp_path / "run", progress=False)
    expected, lr, best = [], 0.01, -math.inf
    for row in s["history"]:
        expected.append(lr)
        v = _score(row, watched)
        if v > best + 1e-9:
            best = v
        else:
            lr *= 0.1
    assert [r["lr"] for r in s["history"]] == pytest.approx(expected)


@pytest.mark.parametrize("stop_after, epochs_run", [(1, 3), (0, 6)])
def test_stop_after_last_drop(blobs, tmp_path, cache_set, capsys, stop_after, epochs_run) -> None:
    """Zero gradients and no weight decay freeze the net: epoch 1 sets the best validation value,
    epoch 2 spends the only lr drop, epoch 3 is one more epoch without improvement -> stop."""
    def frozen(logits, y):
        return (logits * 0.0).sum()

    recipe = tiny_recipe(cache_set, "epochs=6", "lr_patience=1", "max_lr_drops=1", "weight_decay=0",
                         "max_steps_per_epoch=1", f"stop_after_last_drop={stop_after}")
    s = fit(recipe, [blobs], tmp_path / "run", progress=False, loss_fn=frozen)
    assert len(s["history"]) == epochs_run
    assert load_checkpoint(tmp_path / "run" / "last.pt").training_state["epoch"] == epochs_run
    assert (tmp_path / "run" / "test_metrics.json").exists()
    assert ("every lr drop is spent" in capsys.readouterr().err) == bool(stop_after)
