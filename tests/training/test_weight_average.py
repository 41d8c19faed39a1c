"""Weight averaging (recipe ``ema_epochs``): the average follows the closed-form EMA (weights and
BatchNorm statistics), it is what fit validates and saves, and a resumed run repeats an
uninterrupted one."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr_studio.core.models.checkpoint import load_checkpoint
from cxr_studio.training.averaging import WeightAverage, ema_decay, make_average, steps_per_epoch
from cxr_studio.training.fit import fit
from cxr_studio.training.loops import predict
from cxr_studio.training.prepare import prepare_data
from cxr_studio.training.recipes import RecipeError

from train_helpers import log_rows, tiny_recipe, write_shenzhen


def test_decay_remembers_the_asked_number_of_epochs() -> None:
    assert steps_per_epoch(448, 32) == 14
    assert steps_per_epoch(448, 32, world_size=2) == 7
    assert steps_per_epoch(448, 32, max_steps=3) == 3
    assert steps_per_epoch(0, 32) == 1
    d = ema_decay(2.0, 14)
    assert d == pytest.approx(1 - 1 / 28)
    with pytest.raises(ValueError):
        ema_decay(0.0, 14)
    assert make_average(nn.Linear(2, 2), 0.0, 14) is None


def test_recipe_refuses_a_negative_or_endless_average() -> None:
    for bad in ("-1", "nan", "1000"):
        with pytest.raises(RecipeError, match="ema_epochs"):
            tiny_recipe(f"ema_epochs={bad}")
    assert tiny_recipe("ema_epochs=2").ema_epochs == 2.0


def test_average_is_the_exponential_moving_average_of_weights_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    avg = WeightAverage(model, ema_epochs=1.0, steps=4)  # decay 0.75
    d = avg.decay
    assert d == pytest.approx(0.75)
    expect_w = expect_m = None
    for step in range(5):
        model.train()
        model(torch.randn(8, 1, 6, 6) + step)  # moves the running mean
        with torch.no_grad():
            model[0].weight.add_(0.5)
        avg.update(model)
        w, m = model[0].weight.detach().clone(), model[1].running_mean.clone()
        expect_w = w if expect_w is None else d * expect_w + (1 - d) * w  # the first update copies
        expect_m = m if expect_m is None else d * expect_m + (1 - d) * m
    assert avg.updates == 5
    assert torch.allclose(avg.module[0].weight, expect_w, atol=1e-6)
    assert torch.allclose(avg.module[1].running_mean, expect_m, atol=1e-6)
    assert not torch.allclose(avg.module[0].weight, model[0].weight)  # it lags the raw weights


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_shenzhen(tmp_path_factory.mktemp("data") / "S", 24)


def test_fit_validates_and_saves_the_average_and_resumes_it(blobs, tmp_path) -> None:
    sets = (f"cache_dir={tmp_path / 'cache'}", "ema_epochs=1", "lr=0.05", "norm=batch")
    s = fit(tiny_recipe(*sets, "epochs=3"), [blobs], tmp_path / "ref", progress=False)
    ref = tmp_path / "ref"
    last = load_checkpoint(ref / "last.pt")
    state = last.training_state["average"]
    assert state["updates"] == sum(steps_per_epoch(int(r["train_images"]), 8) for r in s["history"])  # one per step
    raw = state["raw_model"]
    saved = last.model.state_dict()
    assert set(raw) == set(saved)
    assert any(not torch.equal(raw[k], saved[k]) for k in raw if raw[k].is_floating_point())
    # the saved model is the one validated: its validation loss is the last row's
    data = prepare_data(tiny_recipe(*sets), [blobs], tmp_path / "check", ref / "split.json", progress=False)
    _, _, vloss = predict(last.model, data.val, torch.device("cpu"))
    assert vloss == pytest.approx(float(log_rows(ref)[-1]["val_loss"]), rel=1e-4)

    # one epoch, then --resume to three: the same rows as the uninterrupted run
    fit(tiny_recipe(*sets, "epochs=1"), [blobs], tmp_path / "run", progress=False, split_file=ref / "split.json")
    fit(tiny_recipe(*sets, "epochs=3"), [blobs], tmp_path / "run", progress=False, resume=True)
    a, b = log_rows(ref), log_rows(tmp_path / "run")
    assert len(b) == 3
    for key in ("train_loss", "val_loss", "val_auc", "lr"):
        assert [float(r[key]) for r in a] == pytest.approx([float(r[key]) for r in b], rel=1e-5), key


def test_guided_run_scores_the_average_on_the_validation_outlines(tmp_path) -> None:
    data = write_shenzhen(tmp_path / "P", 24, lesions=True, prefix="PHANTOM")
    recipe = tiny_recipe(f"cache_dir={tmp_path / 'cache'}", "ema_epochs=1", "epochs=2", "lesion_guidance=gradcam",
                         "lesion_weight=1")
    fit(recipe, [data], tmp_path / "run", progress=False)
    rows = log_rows(tmp_path / "run")
    assert len(rows) == 2
    assert all(0.0 <= float(r["val_pointing"]) <= 1.0 for r in rows)  # nan if the average had no hook
