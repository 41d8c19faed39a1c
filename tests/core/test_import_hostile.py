"""Hostile checkpoints (issue 16 cases 3, 4 and the weights half of 5): metadata asking for a huge
model is refused from the meta device before anything is allocated; a preprocessing size the model
cannot take is corrected with a warning (or refused when the user asked for it); all-NaN weights
are named as such. Each in one sentence."""
from __future__ import annotations

import pytest
import torch
import torchvision

from cxr_studio.core.models import checkpoint as ck
from cxr_studio.core.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cxr_studio.core.models import build_model
from cxr_studio.core.models.importers import open_model
from cxr_studio.core.pipeline import PreprocessSpec

TINY = dict(width=0.125, fc_width=64)


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("cxrnet", init="kaiming", **TINY)
    return save_checkpoint(tmp_path / "m.pt", model, arch="cxrnet", arch_kwargs=dict(init="kaiming", **TINY),
                           preprocess=PreprocessSpec.preset("fast"))


def _rewrite(src, dst, **changes):
    raw = torch.load(src, weights_only=True)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    torch.save(raw, dst)
    return dst


def _never_built(*_a, **_k):
    raise AssertionError("the model was built for real before its weights were checked")


@pytest.mark.parametrize("change", [{"fc_width": 10**7}, {"input_size": 100000}])
def test_metadata_asking_for_a_huge_model_is_refused_before_allocating(saved, tmp_path, monkeypatch, change):
    bad = _rewrite(saved, tmp_path / "huge.pt", arch_kwargs=change)
    monkeypatch.setattr(ck, "build_model", _never_built)  # only the meta-device build may run
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    assert "huge.pt" in msg and "\n" not in msg
    if "fc_width" in change:  # builds on the meta device, then the shapes disagree
        assert "do not fit cxrnet" in msg and "would need" in msg and "GB" in msg
        assert "shape mismatch: classifier.fc6.weight (64, " in msg
    else:  # the builder's own check
        assert "cannot be built: input_size must be between 8 and 4096" in msg


def test_preprocessing_the_model_cannot_take_is_corrected_with_a_warning(saved, tmp_path):
    bad = _rewrite(saved, tmp_path / "small.pt", preprocess={"input_size": 64})
    loaded = load_checkpoint(bad)
    assert loaded.spec.input_size == 227  # cxrnet's own size
    assert len(loaded.warnings) == 1 and "3x64x64" in loaded.warnings[0] and "using its own 3x227x227" in loaded.warnings[0]
    x = torch.rand(1, 3, loaded.spec.input_size, loaded.spec.input_size)
    assert loaded.model(x).shape == (1, 2)
    with pytest.raises(CheckpointError, match="cannot take the 3x64x64 input --input-size gives"):
        load_checkpoint(saved, input_size=64)  # asked for by the user: refused, not silently changed


def test_one_channel_preprocessing_for_a_three_channel_model_is_corrected(saved, tmp_path):
    bad = _rewrite(saved, tmp_path / "gray.pt", preprocess={"channels": 1})
    loaded = load_checkpoint(bad)
    assert loaded.spec.channels == 3 and "1x227x227" in loaded.warnings[0]


def test_all_nan_weights_are_named_at_load(saved, tmp_path):
    raw = torch.load(saved, weights_only=True)
    nan_state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                 for k, v in raw["state_dict"].items()}
    bad = _rewrite(saved, tmp_path / "diverged.pt", state_dict=nan_state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    n = len(nan_state)
    assert f"non-finite weights (NaN or infinity) in {n} of {n} tensors" in msg and "\n" not in msg
    tv = torchvision.models.resnet18(num_classes=2)
    with torch.no_grad():
        tv.fc.weight[0, 0] = float("inf")
    torch.save(tv.state_dict(), tmp_path / "inf.pth")
    with pytest.raises(CheckpointError, match="in 1 of .* tensors, starting with fc.weight"):
        open_model(tmp_path / "inf.pth", arch="resnet18")
    traced = tmp_path / "nan_traced.pt"
    torch.nn.init.constant_(tv.conv1.weight, float("nan"))
    torch.jit.trace(tv.eval(), torch.rand(1, 3, 64, 64)).save(str(traced))
    with pytest.raises(CheckpointError, match="nan_traced.pt holds non-finite weights"):
        open_model(traced)


def test_the_commands_say_the_same_one_sentence(saved, tmp_path, monkeypatch, capsys):
    """Cases 3 and 4 through `cxr-studio export` and `cxr-studio-train eval`, as a user meets them."""
    from cxr_studio.batch import main as export_main
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.training.cli import main as train_main

    write_png(tmp_path / "img.png", make_phantom(3, size=96).image)
    huge = _rewrite(saved, tmp_path / "huge.pt", arch_kwargs={"fc_width": 10**7})
    monkeypatch.setattr(ck, "build_model", _never_built)
    for run in (lambda: export_main(["--checkpoint", str(huge), "--out", str(tmp_path / "o"), "--no-progress",
                                     str(tmp_path / "img.png")]),
                lambda: train_main(["eval", "--checkpoint", str(huge), "--data", str(tmp_path), "--all"])):
        assert run() != 0
        err = capsys.readouterr().err
        assert "huge.pt" in err and "would need" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("img*"))
    monkeypatch.undo()
    small = _rewrite(saved, tmp_path / "small.pt", preprocess={"input_size": 64})  # corrected with a warning
    assert export_main(["--checkpoint", str(small), "--out", str(tmp_path / "s"), "--no-progress",
                        str(tmp_path / "img.png")]) == 0
    assert "using its own 3x227x227" in capsys.readouterr().err
    assert all((tmp_path / "s" / f"img{x}").is_file() for x in (".png", ".npy", ".json"))
