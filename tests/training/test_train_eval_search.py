"""eval (metrics JSON + ROC PNG), search (sorted table + a TOML that fit accepts), classification
metrics against hand-computed values, and the CLI surface."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_studio.training.cli import main
from cxr_studio.training.metrics import auc_score, classification_metrics, roc_curve, youden_threshold
from cxr_studio.training.recipes import load_recipe

from train_helpers import TINY_SETS, tiny_recipe, write_shenzhen


def test_metrics_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    m = classification_metrics(y, p)
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    # pairs (pos, neg) ranked correctly: 0.8>all 3, 0.9>all 3, 0.4>0.1,0.2 -> 8 of 9
    assert m["auc"] == pytest.approx(8 / 9)
    assert auc_score(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert np.isnan(auc_score(np.array([1, 1]), np.array([0.2, 0.3])))
    fpr, tpr, _ = roc_curve(y, p)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(8 / 9)


def test_youden_threshold_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    # thresholds 0.8 (sens 2/3, spec 1) and 0.4 (sens 1, spec 2/3) both give J = 2/3: the lower wins
    assert youden_threshold(y, p) == pytest.approx(0.4)
    assert youden_threshold(np.array([0, 1]), np.array([0.3, 0.7])) == pytest.approx(0.7)
    assert np.isnan(youden_threshold(np.array([1, 1]), np.array([0.2, 0.3])))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("evalrun")
    data = write_shenzhen(base / "S", 24)
    out = base / "run"
    rc = main(["fit", "--recipe", "demo", "--data", str(data), "--out", str(out), "--no-progress", *TINY_SETS,
               "--set", f"cache_dir={base / 'cache'}", "--set", "epochs=2"])
    assert rc == 0
    return data, out, base


def test_eval_writes_json_and_roc(trained, capsys) -> None:
    data, out, base = trained
    js = base / "eval.json"
    rc = main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--all", "--json", str(js),
               "--cache-dir", str(base / "cache")])
    assert rc == 0
    m = json.loads(js.read_text())
    assert m["n"] == 24 and m["images"] == "all"
    assert sum(map(sum, m["confusion_matrix"])) == 24
    for k in ("accuracy", "auc", "sensitivity", "specificity"):
        assert 0.0 <= m[k] <= 1.0
    assert (base / "eval.roc.png").stat().st_size > 1000
    # default: the run folder's split -> its test part only
    rc = main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--json", str(base / "t.json")])
    assert rc == 0
    t = json.loads((base / "t.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert t["n"] == len(split["test"]) and t["images"].endswith(":test")
    rc = main(["eval", "--checkpoint", str(base / "nope.pt"), "--data", str(data)])
    assert rc == 2 and "error" in capsys.readouterr().err


def test_eval_threshold_chosen_on_validation(trained, capsys) -> None:
    data, out, base = trained
    rc = main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--threshold", "val",
               "--json", str(base / "v.json")])
    assert rc == 0
    v = json.loads((base / "v.json").read_text())
    assert v["threshold_source"].endswith(":val (Youden)") and 0.0 < v["threshold"] < 1.0
    # the same threshold given by hand gives the same counts on the same test images
    rc = main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--threshold",
               repr(v["threshold"]), "--json", str(base / "g.json")])
    g = json.loads((base / "g.json").read_text())
    assert rc == 0 and g["threshold_source"] == "given"
    assert g["confusion_matrix"] == v["confusion_matrix"] and g["n"] == v["n"]
    capsys.readouterr()
    rc = main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--all", "--threshold", "val"])
    assert rc == 2 and "validation part" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--checkpoint", str(out / "best.pt"), "--data", str(data), "--threshold", "1.5"])
    assert exc.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_search_writes_a_toml_that_fit_accepts(trained, tmp_path) -> None:
    data, _, base = trained
    rc = main(["search", "--recipe", "demo", "--data", str(data), "--out", str(tmp_path / "s"), "--trials", "2",
               "--epochs", "1", *TINY_SETS, "--set", f"cache_dir={base / 'cache'}", "--set", "max_steps_per_epoch=1"])
    assert rc == 0
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    scores = [r["score"] for r in res["rows"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 2
    table = (tmp_path / "s" / "results.md").read_text()
    assert table.count("\n") == 4 and "| 1 |" in table
    best = tmp_path / "s" / "best.toml"
    r = load_recipe(config=best)
    assert r.lr == pytest.approx(res["rows"][0]["config"]["lr"])
    assert r.batch_size == res["rows"][0]["config"]["batch_size"]
    assert r.width == 0.125 and r.spec.input_size == 91  # the base recipe's settings survive
    rc = main(["fit", "--config", str(best), "--data", str(data), "--out", str(tmp_path / "fit"), "--no-progress",
               "--set", "epochs=1", "--set", "max_steps_per_epoch=1"])
    assert rc == 0 and (tmp_path / "fit" / "best.pt").exists()


def test_cli_help_and_lists(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for sub in ("fit", "eval", "search", "phantoms", "export-release", "models"):
        assert sub in out
    assert main(["models", "--arch", "cxrnet"]) == 0
    assert "(103.3M)" in capsys.readouterr().out
    assert main(["recipes"]) == 0
    assert "paper-custom-tuned" in capsys.readouterr().out
    assert main(["fit", "--recipe", "nope", "--data", "x", "--out", "y"]) == 2
    assert "Unknown recipe" in capsys.readouterr().err


def test_phantoms_and_export_release(trained, tmp_path) -> None:
    import torch

    _, out, _ = trained
    assert main(["phantoms", "--out", str(tmp_path / "ph"), "--n", "2", "--size", "64", "--seed", "3"]) == 0
    assert len(list((tmp_path / "ph" / "CXR_png").glob("*.png"))) == 2
    rel = tmp_path / "rel.pt"
    assert main(["export-release", str(out / "last.pt"), str(rel)]) == 0
    ck = torch.load(rel, weights_only=True)
    assert "training_state" not in ck and rel.stat().st_size < (out / "last.pt").stat().st_size
