"""Recipes: named defaults, TOML files and --set overrides with typed parsing and clear errors."""
from __future__ import annotations

import pytest

from cxr_studio.training.recipes import RECIPES, Recipe, RecipeError, load_recipe


def test_named_recipes_resolve_and_paper_custom_is_literal() -> None:
    for name in RECIPES:
        r = load_recipe(name)
        assert r.name == name
        r.validate()
    p = load_recipe("paper-custom")
    assert (p.arch, p.init, p.optimizer, p.momentum, p.weight_decay, p.lr, p.epochs) == (
        "cxrnet", "paper", "sgd", 0.9, 5e-4, 1e-3, 60)
    assert (p.lr_drop_factor, p.max_lr_drops) == (0.1, 3)
    assert p.plateau_metric == "val_acc" and p.spec.normalization == "none"
    tuned = load_recipe("paper-custom-tuned")
    assert (tuned.init, tuned.plateau_metric, tuned.spec.normalization) == ("kaiming", "val_loss", "center")
    assert (p.lr_patience, tuned.lr_patience) == (3, 8)
    # everything else is the paper's
    same = {k for k, v in tuned.to_dict().items() if p.to_dict()[k] == v}
    assert set(p.to_dict()) - same == {"name", "description", "init", "plateau_metric", "lr_patience",
                                       "preprocess", "aug_size"}
    for name in ("paper-alexnet", "paper-vgg16", "paper-vgg19"):
        r = load_recipe(name)
        assert r.weights == "imagenet" and r.head_lr_factor > 1 and r.lr == 1e-3 and r.epochs == 60
    demo = load_recipe("demo")
    assert demo.width < 1 and demo.spec.segmentation == "none" and demo.spec.crop is False


def test_set_overrides_are_typed() -> None:
    r = load_recipe("demo", sets=["lr=0.5", "epochs=3", "hflip=true", "preprocess.input_size=128",
                                  "preprocess.segmentation=heuristic", "split=0.6,0.3,0.1", "weights=none"])
    assert r.lr == 0.5 and isinstance(r.lr, float)
    assert r.epochs == 3 and isinstance(r.epochs, int)
    assert r.hflip is True
    assert r.spec.input_size == 128 and r.spec.segmentation == "heuristic"
    assert r.split == [0.6, 0.3, 0.1]


@pytest.mark.parametrize("item, words", [
    ("lrr=0.1", "unknown recipe setting 'lrr'"),
    ("epochs=abc", "expected a int"),
    ("epochs=2.5", "expected a int"),
    ("hflip=maybe", "expected a bool"),
    ("preprocess.colour=1", "unknown preprocess setting 'colour'"),
    ("lr", "key=value"),
    ("lr=-1", "lr must be a positive number"),
    ("preprocess.segmentation=magic", "Unknown segmentation method"),
    ("plateau_metric=val_f1", "plateau_metric must be val_auc, val_acc or val_loss"),
    ("select_metric=val_f1", "select_metric must be val_auc, val_acc, val_loss or val_pointing"),
    ("select_metric=val_pointing", "only lesion-guided runs measure"),
    ("stop_after_last_drop=-1", "stop_after_last_drop at least 0"),
    ("lr_patience=0", "lr_patience must be at least 1"),
    ("head=attention", "head must be 'fc' or 'gap'"),
    ("intensity_jitter=1.5", "intensity_jitter must be in"),
])
def test_bad_set_gives_one_clear_error(item: str, words: str) -> None:
    with pytest.raises(RecipeError, match=words):
        load_recipe("demo", sets=[item])


def test_toml_round_trip_and_precedence(tmp_path) -> None:
    r = load_recipe("paper-custom-tuned", sets=["lr=0.0123", "preprocess.clahe_clip=3.5"])
    f = tmp_path / "r.toml"
    f.write_text(r.to_toml())
    back = load_recipe(config=f)
    assert back.to_dict() == r.to_dict()
    # --set wins over the TOML file, which wins over the named recipe
    f2 = tmp_path / "partial.toml"
    f2.write_text('recipe = "demo"\nlr = 0.2\nepochs = 4\n[preprocess]\ninput_size = 99\n')
    r2 = load_recipe(config=f2, sets=["epochs=5"])
    assert (r2.name, r2.lr, r2.epochs, r2.spec.input_size, r2.width) == ("demo", 0.2, 5, 99, 0.125)


def test_bad_toml_files(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 3\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe("demo", config=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("learning_rate = 0.1\n")
    with pytest.raises(RecipeError, match="unknown recipe setting 'learning_rate'"):
        load_recipe("demo", config=unknown)
    wrong_type = tmp_path / "type.toml"
    wrong_type.write_text('epochs = "many"\n')
    with pytest.raises(RecipeError, match="epochs"):
        load_recipe("demo", config=wrong_type)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("demo", config=tmp_path / "missing.toml")
    with pytest.raises(RecipeError, match="Unknown recipe"):
        load_recipe("paper-resnet")


def test_model_kwargs_follow_arch() -> None:
    assert load_recipe("demo").model_kwargs()["width"] == 0.125
    assert load_recipe("demo").model_kwargs()["head"] == "fc"
    assert load_recipe("cxrnet-tb").model_kwargs()["head"] == "gap"
    assert load_recipe("cxrnet-tb", sets=["head=fc"]).model_kwargs()["head"] == "fc"
    # the paper's LRN is not written into arch_kwargs (checkpoints from before the option stay alike)
    assert "norm" not in load_recipe("paper-custom-tuned").model_kwargs()
    assert "norm" not in load_recipe("cxrnet-tb", sets=["norm=lrn"]).model_kwargs()
    assert load_recipe("cxrnet-tb").model_kwargs()["norm"] == "batch"
    with pytest.raises(RecipeError, match="norm"):
        load_recipe("cxrnet-tb", sets=["norm=group"])


def test_recipe_heads_are_the_cxrnet_heads() -> None:
    from cxr_studio.core.models.cxrnet import HEADS, NORMS
    from cxr_studio.training.recipes import CXRNET_HEADS, CXRNET_NORMS
    assert CXRNET_HEADS == HEADS and CXRNET_NORMS == NORMS
    assert load_recipe("paper-vgg16").model_kwargs() == {"weights": "imagenet", "num_classes": 2}
    assert isinstance(Recipe().to_json(), str)
