"""Shipped models are described from their own metadata; commands without --checkpoint use the one
model for radiographs, and say which models ship when there is none."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cxr_studio.core.models.shipped as shipped
from cxr_studio.batch import main as export_main
from cxr_studio.core.models.checkpoint import save_checkpoint
from cxr_studio.core.imaging.io import write_png
from cxr_studio.core.models import build_model
from cxr_studio.core.phantoms.phantom import make_phantom
from cxr_studio.core.pipeline import PreprocessSpec


def test_describe_reads_title_kind_auc_and_threshold_from_provenance() -> None:
    meta = {"provenance": {"release": {"title": "TB model", "kind": "radiographs", "trained_on": "NLM sets"},
                           "test_metrics": {"pooled": {"auc": 0.91}}, "operating_point": {"threshold": 0.42}}}
    m = shipped.describe_shipped(Path("x/cxrnet-tb.pt"), meta)
    assert (m.name, m.kind, m.trained_on, m.test_auc, m.threshold) == ("TB model", "radiographs", "NLM sets", 0.91, 0.42)
    assert m.label() == "TB model — trained on NLM sets, test AUC 0.910"
    assert m.short_label() == "TB model · AUC 0.910 · radiographs"  # the AUC before what a narrow list elides
    guided = shipped.describe_shipped(Path("x/cxrnet-tb.pt"), {"provenance": {
        "release": {"title": "TB model, lesion-guided (cxrnet)"}, "test_metrics": {"pooled": {"auc": 0.8734}}}})
    assert guided.short_label() == "TB model, lesion-guided · AUC 0.873 · radiographs"
    assert "(cxrnet)" in guided.label()
    demo = shipped.describe_shipped(Path("x/cxrnet-demo.pt"), {"provenance": {}})
    assert demo.kind == "phantoms" and demo.test_auc is None and demo.threshold is None


@pytest.mark.parametrize("prov", [None, {}, {"operating_point": {"threshold": "0.5"}},
                                  {"operating_point": {"threshold": 1.5}}, {"operating_point": 0.5}])
def test_operating_threshold_ignores_what_is_not_a_probability(prov) -> None:
    assert shipped.operating_threshold(prov) is None


def test_no_default_message_lists_every_shipped_model() -> None:
    msg = shipped.no_default_message()
    for m in shipped.shipped_models():
        assert str(m.path) in msg
    assert msg.startswith("Name a model with --checkpoint FILE")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    kwargs = {"width": 0.1, "fc_width": 16, "input_size": 91}
    model = build_model("cxrnet_narrow", **kwargs)
    base = tmp_path_factory.mktemp("shipped")
    spec = PreprocessSpec.preset("fast").replace(input_size=91, intermediate_size=128)
    ck = save_checkpoint(base / "tiny.pt", model, arch="cxrnet_narrow", arch_kwargs=kwargs, preprocess=spec)
    img = base / "chest.png"
    write_png(img, make_phantom(1, size=160).image)
    return ck, img


def test_export_without_checkpoint_uses_the_default_model(tiny, tmp_path, monkeypatch, capsys) -> None:
    ck, img = tiny
    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: ck)
    assert export_main(["--out", str(tmp_path / "o"), str(img)]) == 0
    assert list((tmp_path / "o").glob("chest*.png")) and list((tmp_path / "o").glob("chest*.json"))


def test_export_without_checkpoint_and_no_default_names_the_shipped_models(tiny, tmp_path, monkeypatch,
                                                                             capsys) -> None:
    _, img = tiny
    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: None)
    assert export_main(["--out", str(tmp_path / "o"), str(img)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_the_tb_model_stays_the_default_beside_its_unguided_twin(monkeypatch, tmp_path) -> None:
    def model(name: str, kind: str = "radiographs") -> shipped.ShippedModel:
        return shipped.ShippedModel(tmp_path / name, name, kind, "NLM", 0.85, 0.6)

    tb, twin, demo = model("cxrnet-tb.pt"), model("cxrnet-tb-unguided.pt"), model("cxrnet-demo.pt", "phantoms")
    monkeypatch.setattr(shipped, "shipped_models", lambda: [tb, twin, demo])
    assert shipped.default_shipped_model() is tb
    monkeypatch.setattr(shipped, "shipped_models", lambda: [twin, demo])
    assert shipped.default_shipped_model() is twin  # the only model for radiographs
    other = model("other.pt")
    monkeypatch.setattr(shipped, "shipped_models", lambda: [twin, other, demo])
    assert shipped.default_shipped_model() is None  # several, none of them the TB model: ambiguous
