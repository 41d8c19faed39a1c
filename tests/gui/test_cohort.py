"""Issue 17 item 5: the cohort view scores a data root in the worker (table, ROC, confusion matrix,
AUC equal to `cxr-studio-train eval`), filters in one click, opens a clicked image, cancels midway
without harm, and runs from the command line."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt

N = 20


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxr_studio.core.phantoms.phantom import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("cohort") / "phantoms", N, seed=40, size=256)


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow cxrnet whose preprocessing does not segment."""
    import torch

    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.models import build_model

    torch.manual_seed(3)
    kw = {"width": 0.125, "fc_width": 64}
    model = build_model("cxrnet", **kw)
    path = tmp_path_factory.mktemp("ckpt") / "plain.pt"
    save_checkpoint(path, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=dict(model.default_preprocess, segmentation="none", crop=False),
                    provenance={"recipe": "test"})
    return path


def _score(qtbot: Any, w: Any, root: Path) -> Any:
    from cxr_studio.gui import layout

    layout.show_bottom(w, w.cohort_dock)
    out: list[Any] = []
    w.cohort_dock.score(str(root), on_done=out.append)
    qtbot.waitUntil(lambda: bool(out), timeout=300000)
    return out[0]


def test_cohort_table_roc_and_auc_equal_to_eval(qtbot: Any, loaded_window: Any, cohort_root: Path,
                                                tiny_checkpoint: Path, tmp_path: Path) -> None:
    from cxr_studio.training.evaluate import evaluate_checkpoint

    w = loaded_window
    d = w.cohort_dock
    res = _score(qtbot, w, cohort_root)
    assert res is not None and not res.cancelled and len(res.rows) == N
    assert d.table.rowCount() == N and all(r.label in (0, 1) for r in res.rows)
    m = evaluate_checkpoint(tiny_checkpoint, [cohort_root], use_all=True, json_out=tmp_path / "eval.json",
                            cache_dir=tmp_path / "cache", threshold=res.threshold)
    assert res.auc() == pytest.approx(m["auc"], abs=1e-9)
    assert f"AUC {m['auc']:.3f}" in d.info.text()
    conf = res.confusion()
    assert sum(conf.values()) == N and str(conf["false negative"]) in d.matrix.text()
    # lesion pointing on the abnormal phantoms (each has a lesion mask)
    abnormal = [r for r in res.rows if r.label == 1]
    assert res.pointing()[1] == len(abnormal) > 0 and all(r.lesion_hit is not None for r in abnormal)
    assert all(r.lesion_hit is None for r in res.rows if r.label == 0)
    assert f"lesion pointing {res.pointing()[0]}/{len(abnormal)}" in d.info.text()
    assert not d.table.isColumnHidden(5)
    from cxr_studio.gui.cohort import CohortResult, CohortRow

    d.show_result(CohortResult("x", [CohortRow("a.png", 1, 0.9), CohortRow("b.png", 0, 0.2)], 0.5))
    assert d.table.isColumnHidden(5)  # no outlines in this cohort (Montgomery): no empty "lesion hit" column
    d.show_result(res)
    assert not d.table.isColumnHidden(5)
    # one-click filters
    for name, kind in (("false negatives", "false negative"), ("false positives", "false positive")):
        d.filter.setCurrentText(name)
        shown = d.visible_rows()
        assert len(shown) == conf[kind] and all(res.rows[i].kind(res.threshold) == kind for i in shown)
    d.filter.setCurrentText("all")
    assert len(d.visible_rows()) == N
    # sortable by probability
    d.table.sortItems(2)
    probs = [res.rows[i].probability for i in d.visible_rows()]
    assert probs == sorted(probs)
    # export
    out = d.export_csv(tmp_path / "cohort.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == N and {"path", "label", "probability", "lesion_hit"} <= set(rows[0])


def test_clicking_a_row_opens_that_image_with_its_heatmap(qtbot: Any, window: Any, phantom: Any,
                                                          cohort_root: Path, plain_checkpoint: Path) -> None:
    w = window
    w.open_radiograph(phantom.radiograph(), phantom.lung_mask, "phantom")
    w.controller.load_checkpoint(str(plain_checkpoint))
    qtbot.waitUntil(lambda: w.session.heatmap is not None, timeout=60000)
    res = _score(qtbot, w, cohort_root)
    d = w.cohort_dock
    d.table.sortItems(2, Qt.SortOrder.DescendingOrder)  # the highest probability first
    first = d.visible_rows()[0]
    assert res.rows[first].probability == max(r.probability for r in res.rows)
    before = w.session.heatmap
    d._row_clicked(0, 0)
    target = Path(res.rows[first].path)
    qtbot.waitUntil(lambda: w.image_path == target and w.session.heatmap not in (None, before)
                    and w.session.radiograph is not None and w.bridge.pending == 0, timeout=60000)
    assert w.view.heat_map is not None and w.last_error is None


def test_cancel_midway_leaves_the_app_usable(qtbot: Any, loaded_window: Any, cohort_root: Path) -> None:
    from cxr_studio.gui import layout

    w = loaded_window
    d = w.cohort_dock
    layout.show_bottom(w, d)
    out: list[Any] = []
    seen: list[float] = []
    w.bridge.progress.connect(lambda label, f, m: seen.append(f) if label == "scoring cohort" else None)
    d.score(str(cohort_root), on_done=out.append)
    assert d.cancel_button.isEnabled() and not d.open_button.isEnabled()
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=120000)
    d.cancel_button.click()
    qtbot.waitUntil(lambda: bool(out), timeout=120000)
    res = out[0]
    assert res.cancelled and 0 < len(res.rows) < N
    assert "partial" in d.info.text() and d.table.rowCount() == len(res.rows)
    assert d.open_button.isEnabled() and not d.cancel_button.isEnabled()
    assert w.last_error is None
    # still usable: a channel change redraws, and a new scoring runs to the end
    w.session.channel = 3
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "channel", None) == 3, timeout=30000)
    again = _score(qtbot, w, cohort_root)
    assert again is not None and len(again.rows) == N and not again.cancelled


def test_cohort_rows_know_what_they_are() -> None:
    from cxr_studio.gui.cohort import CohortResult, CohortRow, matches

    rows = [CohortRow("a", 1, 0.9, lesion_hit=True), CohortRow("b", 1, 0.2, lesion_hit=False), CohortRow("c", 0, 0.7), CohortRow("d", 0, 0.1),
            CohortRow("e", None, 0.5), CohortRow("f", 1, float("nan"), "unreadable")]
    res = CohortResult("root", rows, 0.5)
    assert [r.kind(0.5) for r in rows] == ["true positive", "false negative", "false positive", "true negative",
                                          "unlabelled", "failed"]
    assert [r.path for r in rows if matches(r, "errors", 0.5)] == ["b", "c"]
    assert res.confusion() == {"true positive": 1, "false negative": 1, "false positive": 1, "true negative": 1}
    assert res.auc() == pytest.approx(0.75)
    lines = res.to_csv().splitlines()
    assert lines[0] == "path,label,probability,prediction,correct,lesion_hit,error"
    assert lines[1] == "a,1,0.900000,1,1,1," and lines[2] == "b,1,0.200000,0,0,0,"
    assert lines[6] == "f,1,,,,,unreadable" and res.pointing() == (1, 2)


def test_the_cohort_says_which_images_the_model_trained_on(qtbot: Any, window: Any) -> None:
    """A cohort that holds the model's own training images: the AUC over the rest is given beside."""
    from types import SimpleNamespace

    from cxr_studio.gui.cohort import CohortResult, CohortRow, seen_by

    loaded = SimpleNamespace(provenance={"split": {"train": ["S/CXR_png/a_1.png", "S/CXR_png/b_0.png"],
                                                   "val": ["S/CXR_png/c_1.png"], "test": ["S/CXR_png/d_1.png"]}})
    assert seen_by(loaded) == {"a_1.png", "b_0.png", "c_1.png"} and seen_by(SimpleNamespace()) == frozenset()
    rows = [CohortRow("/data/a_1.png", 1, 0.9), CohortRow("/data/b_0.png", 0, 0.1), CohortRow("/data/c_1.png", 1, 0.8),
            CohortRow("/data/d_1.png", 1, 0.3), CohortRow("/data/e_0.png", 0, 0.6), CohortRow("/data/f_0.png", 0, 0.2)]
    res = CohortResult("root", rows, 0.5, seen_names=seen_by(loaded))
    assert [r.path for r in res.seen()] == ["/data/a_1.png", "/data/b_0.png", "/data/c_1.png"]
    rest = res.held_out()
    assert [r.path for r in rest.rows] == ["/data/d_1.png", "/data/e_0.png", "/data/f_0.png"]
    assert rest.auc() == pytest.approx(0.5) and res.auc() == pytest.approx(8 / 9)  # the seen ones flatter it
    d = window.cohort_dock
    d.show_result(res)
    assert "3 are the model's own training or validation images (AUC 0.500 over the other 3)" in d.info.text()
    d.show_result(CohortResult("root", rows, 0.5))
    assert "training or validation" not in d.info.text()


def test_cli_cohort_writes_the_table_and_the_screenshot(cohort_root: Path, tiny_checkpoint: Path,
                                                       tmp_path: Path) -> None:
    shot, table = tmp_path / "cohort.png", tmp_path / "cohort.csv"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CXR_STUDIO_SETTINGS=str(tmp_path / "s.ini"),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "cxr_studio.cli", "--cohort", str(cohort_root), "--checkpoint",
                        str(tiny_checkpoint), "--cohort-csv", str(table), "--screenshot", str(shot),
                        "--geometry", "1366x768"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == N and all(row["label"] in ("0", "1") for row in rows)
    assert np.isfinite([float(row["probability"]) for row in rows]).all()
    import cv2

    assert cv2.imread(str(shot)).shape[:2] == (768, 1366)
    bad = subprocess.run([sys.executable, "-m", "cxr_studio.cli", "--cohort", str(tmp_path / "nowhere")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such folder" in bad.stderr and "Traceback" not in bad.stderr
