"""Issue 17 item 7: long jobs can be cancelled (forward pass, folder export) and the export dialogs
suggest ``<image>_<layer>_<method>[_<channel>].png`` in the last used folder."""
from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def unsegmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.models import build_model

    torch.manual_seed(2)
    kw = {"width": 0.125, "fc_width": 64}
    model = build_model("cxrnet", **kw)
    path = tmp_path_factory.mktemp("ckpt") / "plain.pt"
    save_checkpoint(path, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=dict(model.default_preprocess, segmentation="none", crop=False),
                    provenance={"recipe": "test"})
    return path


def test_export_dialogs_suggest_a_descriptive_name_in_the_last_folder(qtbot: Any, loaded_window: Any,
                                                                      tmp_path: Path, monkeypatch: Any) -> None:
    from PySide6.QtWidgets import QFileDialog

    w = loaded_window
    hv = w.session.heatmap
    w._remember_export_dir(tmp_path / "earlier.png")
    assert w.suggested_name() == tmp_path / f"phantom_{hv.layer}_activation_{hv.channel}.png"
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (asked.append(a[2]) or ("", "")))
    w.ask_export()
    w.ask_save_image("compare")
    w.ask_save_image("grid")
    assert asked == [str(tmp_path / f"phantom_{hv.layer}_activation_{hv.channel}.png"),
                     str(tmp_path / "phantom_compare.png"), str(tmp_path / f"phantom_{w.session.layer}_grid.png")]
    w.session.method = "gradcam"
    qtbot.waitUntil(lambda: getattr(w.session.heatmap, "method", None) == "gradcam", timeout=60000)
    assert w.suggested_name().name == f"phantom_{hv.layer}_gradcam.png"  # no channel for Grad-CAM
    w.image_path = Path("/data/CHNCXR 0001_1.png")
    assert w.suggested_name().name == f"CHNCXR-0001_1_{hv.layer}_gradcam.png"


def test_forward_pass_can_be_cancelled(qtbot: Any, loaded_window: Any, monkeypatch: Any) -> None:
    from cxr_studio.core.inspect import views

    w = loaded_window
    started, release = threading.Event(), threading.Event()

    original = views.compute_forward

    def slow(loaded: Any, prep: Any, names: Any = None) -> Any:
        started.set()
        release.wait(30)  # the pass is "long"; its layers check the cancel event when it runs
        return original(loaded, prep, names)

    monkeypatch.setattr(views, "compute_forward", slow)
    messages: list[str] = []
    w.controller.message.connect(messages.append)
    w.session.cache.forward.clear()
    w.controller.ensure_forward(w.session.current_model_id)
    qtbot.waitUntil(lambda: started.is_set() and w.cancel_button.isVisibleTo(w), timeout=30000)
    w.cancel_button.click()
    release.set()
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=30000)
    assert any("cancelled" in m for m in messages)
    assert w.last_error is None and not w.cancel_button.isVisibleTo(w)
    assert w.session.cached_forward() is None  # nothing half-done was kept
    monkeypatch.setattr(views, "compute_forward", original)
    w.session.channel = 2  # still usable: the next request runs the pass again
    w.controller.refresh_forward()
    qtbot.waitUntil(lambda: w.session.cached_forward() is not None, timeout=60000)


def test_folder_export_can_be_cancelled(qtbot: Any, window: Any, phantom: Any, unsegmented: Path,
                                        tmp_path: Path) -> None:
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = window
    w.open_radiograph(phantom.radiograph(), phantom.lung_mask, "phantom")
    w.controller.load_checkpoint(str(unsegmented))
    qtbot.waitUntil(lambda: w.session.heatmap is not None, timeout=60000)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    n = 8
    for i in range(n):
        write_png(src / f"p{i}.png", make_phantom(20 + i, size=256).image)
    codes: list[int] = []
    seen: list[float] = []
    w.bridge.progress.connect(lambda label, f, m: seen.append(f) if label == "exporting folder" else None)
    w.export_folder(str(src), str(out), on_done=codes.append)
    assert w.folder_dialog.isVisible()
    qtbot.waitUntil(lambda: bool(seen), timeout=60000)
    from PySide6.QtWidgets import QPushButton

    w.folder_dialog.findChild(QPushButton).click()  # the dialog's Cancel button
    qtbot.waitUntil(lambda: bool(codes), timeout=120000)
    assert codes == [1] and not w.folder_dialog.isVisible()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == n
    statuses = [r["status"] for r in rows]
    assert "cancelled" in statuses and statuses.count("cancelled") < n + 1
    assert len(list(out.glob("*.png"))) < n
    assert w.last_error is None  # a cancel is not an error
    assert "cancelled" in w.statusBar().currentMessage().lower()
