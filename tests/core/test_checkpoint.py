"""Checkpoints: round trip, safe loading only, one clear error per kind of bad file, atomic writes."""
from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch
import torchvision

from cxr_studio.core.models import checkpoint as ck
from cxr_studio.core.models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    export_release,
    load_checkpoint,
    peek_checkpoint,
    save_checkpoint,
)
from cxr_studio.core.models import build_model
from cxr_studio.core.pipeline import PreprocessSpec

TINY = dict(width=0.125, fc_width=64)


@pytest.fixture()
def tiny_model():
    torch.manual_seed(0)
    return build_model("cxrnet", init="kaiming", **TINY)


def _save(path, model, **kw):
    args = dict(
        arch="cxrnet",
        arch_kwargs=dict(init="kaiming", **TINY),
        class_names=["normal", "abnormal"],
        preprocess=PreprocessSpec.preset("fast"),
        provenance={"recipe": {"lr": 1e-3}, "seed": 7, "metrics": {"val_acc": 0.75}},
    )
    args.update(kw)
    return save_checkpoint(path, model, **args)


def test_round_trip_rebuilds_the_same_model(tmp_path, tiny_model):
    path = _save(tmp_path / "m.pt", tiny_model, training_state={"epoch": 3, "optimizer": {"lr": 0.1}})
    loaded = load_checkpoint(path)
    assert loaded.arch == "cxrnet" and loaded.arch_kwargs == dict(init="kaiming", **TINY)
    assert loaded.class_names == ["normal", "abnormal"]
    assert loaded.spec == PreprocessSpec.preset("fast")
    assert loaded.provenance["seed"] == 7 and loaded.provenance["metrics"] == {"val_acc": 0.75}
    assert set(loaded.provenance["versions"]) >= {"python", "torch", "cxr_studio"}
    assert loaded.provenance["created"]
    assert loaded.training_state == {"epoch": 3, "optimizer": {"lr": 0.1}}
    assert loaded.sha256 == ck.file_sha256(path) and len(loaded.sha256) == 64
    assert loaded.path == path and loaded.format_version == FORMAT_VERSION
    m = loaded.model
    assert not m.training and loaded.device == torch.device("cpu")
    assert all(p.requires_grad for p in m.parameters())
    x = torch.rand(2, 3, 227, 227)
    tiny_model.eval()
    with torch.no_grad():
        assert torch.equal(m(x), tiny_model(x))


def test_defaults_come_from_the_built_model(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "d.pt", tiny_model, provenance={"seed": 1})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "cxr-studio-checkpoint" and raw["format_version"] == 1
    assert raw["arch"] == "cxrnet" and raw["arch_kwargs"] == dict(init="kaiming", **TINY)
    assert raw["preprocess"] == tiny_model.default_preprocess
    assert "training_state" not in raw
    info = peek_checkpoint(path)
    assert "state_dict" not in info and info["has_training_state"] is False


def test_save_refuses_non_plain_values(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="provenance.*object"):
        _save(tmp_path / "x.pt", tiny_model, provenance={"recipe": object()})
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(CheckpointError, match="architecture"):
        _save(tmp_path / "y.pt", tiny_model, arch="no_such_net")


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path, tiny_model, monkeypatch):
    path = _save(tmp_path / "m.pt", tiny_model)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, tiny_model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    obj = {"format": "cxr-studio-checkpoint", "format_version": 1, "payload": _Payload(marker)}
    if writer == "torch":
        torch.save(obj, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError, match="Refused to load .*evil.pt"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_not_a_checkpoint_files(tmp_path):
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(CheckpointError, match="image.png is not a checkpoint: it is a PNG image"):
        load_checkpoint(png)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(b"\x13" + os.urandom(500))
    with pytest.raises(CheckpointError, match="noise.bin"):
        load_checkpoint(noise)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    plain = tmp_path / "list.pt"
    torch.save([1, 2, 3], plain)
    with pytest.raises(CheckpointError, match="list.pt is not a checkpoint"):
        load_checkpoint(plain)
    other = tmp_path / "other.pt"
    torch.save({"hello": "world"}, other)
    with pytest.raises(CheckpointError, match="not a CXR Studio checkpoint"):
        load_checkpoint(other)


def test_truncated_file(tmp_path, tiny_model):
    path = _save(tmp_path / "m.pt", tiny_model)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(cut)
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupt"):
        load_checkpoint(cut)


def _rewrite(path, dst, **changes):
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    torch.save(raw, dst)
    return dst


def test_unknown_format_version_and_architecture(tmp_path, tiny_model):
    path = _save(tmp_path / "m.pt", tiny_model)
    newer = _rewrite(path, tmp_path / "newer.pt", format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="newer.pt uses checkpoint format version 2"):
        load_checkpoint(newer)
    alien = _rewrite(path, tmp_path / "alien.pt", arch="transformer9000")
    with pytest.raises(CheckpointError, match="alien.pt uses the architecture 'transformer9000'"):
        load_checkpoint(alien)


def test_state_dict_that_does_not_fit_names_the_tensors(tmp_path, tiny_model):
    path = _save(tmp_path / "m.pt", tiny_model)
    raw = torch.load(path, weights_only=True)
    sd = raw["state_dict"]
    sd.pop("features.conv3.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["classifier.fc8.weight"] = torch.zeros(5, 64)
    bad = _rewrite(path, tmp_path / "bad.pt", state_dict=sd)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    assert "bad.pt" in msg
    assert "missing: features.conv3.bias" in msg
    assert "unexpected: extra.weight" in msg
    assert "classifier.fc8.weight (5, 64) in file vs (2, 64)" in msg
    with pytest.raises(CheckpointError, match="holds a cxrnet model, not alexnet"):
        load_checkpoint(path, arch="alexnet")


def test_bare_torchvision_state_dict_needs_the_arch_and_loads_what_fits(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet-imagenet-like.pth"
    torch.save(tv.state_dict(), path)
    with pytest.raises(CheckpointError, match="bare state dict.*arch="):
        load_checkpoint(path)
    loaded = load_checkpoint(path, arch="alexnet")
    m = loaded.model
    assert torch.equal(m.features[0].weight, tv.features[0].weight)
    assert torch.equal(m.classifier[4].weight, tv.classifier[4].weight)
    # the number of outputs is read from the state dict's head (issue 13)
    assert m.classifier[6].out_features == 1000 and torch.equal(m.classifier[6].weight, tv.classifier[6].weight)
    assert loaded.warnings == [] and len(loaded.class_names) == 1000
    # a head size asked for explicitly keeps its random init, said in a warning
    loaded = load_checkpoint(path, arch="alexnet", arch_kwargs={"num_classes": 2})
    assert loaded.model.classifier[6].out_features == 2
    assert any("classifier.6.weight (1000, 4096) in file vs (2, 4096)" in w for w in loaded.warnings)
    assert loaded.spec == PreprocessSpec.preset("torchvision")
    with pytest.raises(CheckpointError, match="does not fit cxrnet"):
        load_checkpoint(path, arch="cxrnet", arch_kwargs=TINY)


def test_export_release_strips_training_state(tmp_path, tiny_model):
    src = _save(tmp_path / "train.pt", tiny_model, training_state={"epoch": 9})
    dst = export_release(src, tmp_path / "release" / "model.pt")
    rel = load_checkpoint(dst)
    assert rel.training_state is None
    assert rel.provenance["released_from_sha256"] == ck.file_sha256(src)
    assert rel.provenance["seed"] == 7
    assert load_checkpoint(src).training_state == {"epoch": 9}
    bare = tmp_path / "bare.pt"
    torch.save(tiny_model.state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare.pt is not a CXR Studio checkpoint"):
        export_release(bare, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_class_names_must_match_the_outputs(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="3 class names given for a model with 2 outputs"):
        _save(tmp_path / "c.pt", tiny_model, class_names=["a", "b", "c"])
    path = _save(tmp_path / "m.pt", tiny_model)
    bad = _rewrite(path, tmp_path / "names.pt", class_names=["only one"])
    with pytest.raises(CheckpointError, match="names.pt names 1 classes .* 2 outputs"):
        load_checkpoint(bad)
    damaged = _rewrite(path, tmp_path / "damaged.pt", arch_kwargs=["width", 0.125])
    with pytest.raises(CheckpointError, match="damaged.pt is damaged: its arch_kwargs is a list"):
        load_checkpoint(damaged)


def test_wrapped_model_is_saved_without_the_wrapper(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "dp.pt", torch.nn.DataParallel(tiny_model))
    raw = torch.load(path, weights_only=True)
    assert raw["arch"] == "cxrnet"
    assert all(not k.startswith("module.") for k in raw["state_dict"])
    assert load_checkpoint(path).arch_kwargs == dict(init="kaiming", **TINY)


def test_saved_file_gets_normal_permissions(tmp_path, tiny_model):
    umask = os.umask(0o022)
    os.umask(umask)
    path = _save(tmp_path / "perm.pt", tiny_model)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
