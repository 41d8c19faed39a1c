"""Training on a CUDA GPU (run where one is lent; skipped elsewhere): mixed precision (bf16 autocast,
or fp16 with a grad scaler) trains, the checkpoint it writes is float32 and opens on the CPU with
the same predictions, ``--resume`` continues a CUDA run, and every lesion-guidance form gives a finite
term and finite gradients under autocast."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxr_studio.core.models import build_model
from cxr_studio.core.models.checkpoint import load_checkpoint
from cxr_studio.training.fit import fit
from cxr_studio.training.guidance import Guidance
from cxr_studio.training.loops import autocast_context, predict
from cxr_studio.training.prepare import prepare_data
from cxr_studio.training.recipes import load_recipe

from guidance_phantoms import phantom_recipe, write_confounded
from train_helpers import log_rows, tiny_recipe, write_shenzhen

FORMS = ("gradcam", "input_grad", "seg_head")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_shenzhen(tmp_path_factory.mktemp("data") / "S", 32)


def test_amp_training_on_cuda_writes_a_float32_checkpoint_that_predicts_alike_on_the_cpu(blobs, tmp_path):
    recipe = tiny_recipe(f"cache_dir={tmp_path / 'cache'}", "amp=true", "epochs=4", "lr=0.02")
    s = fit(recipe, [blobs], tmp_path / "run", device="cuda", progress=False)
    hist = s["history"]
    assert len(hist) == 4 and all(np.isfinite(r["train_loss"]) for r in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    ck = load_checkpoint(tmp_path / "run" / "best.pt")  # weights_only, onto the CPU
    params = list(ck.model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    data = prepare_data(recipe, [blobs], tmp_path / "run", tmp_path / "run" / "split.json", progress=False,
                        write=False)
    _, p_cpu, _ = predict(ck.model, data.val, torch.device("cpu"))
    _, p_gpu, _ = predict(ck.model.to("cuda"), data.val, torch.device("cuda"), amp=True)
    assert len(p_cpu) == len(data.val) > 0
    assert np.max(np.abs(p_cpu - p_gpu)) < 0.05  # bf16 autocast against float32


def test_resume_continues_a_cuda_run(blobs, tmp_path):
    sets = (f"cache_dir={tmp_path / 'cache'}", "amp=true")
    fit(tiny_recipe(*sets, "epochs=2"), [blobs], tmp_path / "run", device="cuda", progress=False)
    first = log_rows(tmp_path / "run")
    fit(tiny_recipe(*sets, "epochs=3"), [blobs], tmp_path / "run", device="cuda", progress=False, resume=True)
    rows = log_rows(tmp_path / "run")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["train_loss"] for r in rows[:2]] == [r["train_loss"] for r in first]
    assert load_checkpoint(tmp_path / "run" / "last.pt").training_state["epoch"] == 3


@pytest.mark.parametrize("form", FORMS)
def test_every_guidance_form_is_finite_under_autocast(form):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("cxrnet", width=0.125, fc_width=32, input_size=128, num_classes=2, init="kaiming",
                        dropout=0.0, in_channels=1).to(dev)
    g = Guidance(load_recipe("demo", sets=[f"lesion_guidance={form}", "lesion_weight=1"]), model, dev)
    x, y = torch.rand(4, 1, 128, 128, device=dev), torch.tensor([1, 1, 0, 1], device=dev)
    m = torch.zeros(4, 128, 128, device=dev)
    m[:, 30:60, 70:100] = 1.0
    with autocast_context(dev, True):
        _, loss = g(model, x, y, (m, torch.ones(4, dtype=torch.bool, device=dev)), F.cross_entropy)
    term = loss - g.last_loss
    assert torch.isfinite(loss) and float(term.detach()) > 0
    loss.backward()
    conv1 = next(model.parameters()).grad
    assert conv1 is not None and torch.isfinite(conv1).all() and conv1.abs().sum() > 0
    g.close()


def test_guided_fit_on_cuda_reports_the_validation_pointing_game(tmp_path, capsys):
    root = write_confounded(tmp_path / "PH", 32)
    recipe = phantom_recipe(f"cache_dir={tmp_path / 'cache'}", "lesion_guidance=gradcam", "lesion_weight=1",
                            "amp=true", "epochs=2")
    s = fit(recipe, [root], tmp_path / "run", device="cuda", progress=False)
    assert len(s["history"]) == 2 and all(np.isfinite(r["train_loss"]) for r in s["history"])
    err = capsys.readouterr().err
    assert "lesion guidance: gradcam" in err and "on cuda" in err and "autocast" in err
    assert "validation Grad-CAM pointing game" in err
