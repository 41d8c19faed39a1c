"""A real radiograph opens with the shipped model for radiographs; the Models dock lists the shipped
models for one-click loading and reads the prediction against the model's operating threshold."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cxr_studio.core.imaging.io import write_png
from cxr_studio.gui.docks.models_dock import verdict


def test_verdict_reads_the_probability_against_the_operating_point() -> None:
    names = ["normal", "tuberculosis"]
    assert verdict(names, [0.29, 0.71], 0.52) == "tuberculosis 71 % — above the 0.52 operating point"
    assert verdict(names, [0.6, 0.4], 0.52) == "tuberculosis 40 % — below the 0.52 operating point"
    assert verdict(names, [0.6, 0.4], None) == ""
    assert verdict(["a", "b", "c"], [0.2, 0.3, 0.5], 0.5) == ""


@pytest.fixture
def radiograph_file(tmp_path: Path, phantom: Any) -> Path:
    p = tmp_path / "chest.png"
    write_png(p, phantom.image)
    return p


def test_an_image_opened_without_a_model_loads_the_default(qtbot: Any, window: Any, radiograph_file: Path,
                                                            tiny_checkpoint: Path, monkeypatch: Any) -> None:
    import cxr_studio.core.models.shipped as shipped

    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: tiny_checkpoint)
    window.open_image(radiograph_file)
    qtbot.waitUntil(lambda: len(window.session.models) == 1, timeout=30000)
    loaded = next(iter(window.session.models.values()))
    assert Path(loaded.path).resolve() == tiny_checkpoint.resolve()
    window.open_image(radiograph_file)  # a second image keeps the model: no second load
    qtbot.wait(300)
    assert len(window.session.models) == 1


def test_a_named_checkpoint_suppresses_the_default(qtbot: Any, window: Any, radiograph_file: Path,
                                                   tiny_checkpoint: Path, monkeypatch: Any) -> None:
    import cxr_studio.core.models.shipped as shipped

    called = []
    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: called.append(1) or tiny_checkpoint)
    window.auto_default_model = False  # what `cxr-studio IMAGE --checkpoint C` sets
    window.open_image(radiograph_file)
    qtbot.wait(300)
    assert not called and not window.session.models


def test_no_default_says_which_models_ship(qtbot: Any, window: Any, radiograph_file: Path, monkeypatch: Any) -> None:
    import cxr_studio.core.models.shipped as shipped

    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: None)
    window.open_image(radiograph_file)
    msg = window.statusBar().currentMessage()
    assert "--checkpoint" in msg or "Name a model" in msg
    assert not window.session.models


def test_models_dock_lists_shipped_models_and_loads_one_by_double_click(qtbot: Any, window: Any) -> None:
    from cxr_studio.core.models.shipped import shipped_models

    dock = window.models_dock
    listed = [dock.shipped.item(i).data(256) for i in range(dock.shipped.count())]
    assert listed == [str(m.path) for m in shipped_models()]
    demo = next(i for i in range(dock.shipped.count()) if listed[i].endswith("cxrnet-demo.pt"))
    item = dock.shipped.item(demo)
    assert item.text() == "cxrnet-demo · phantoms" and "trained on synthetic phantoms" in item.toolTip()
    dock.shipped.itemActivated.emit(item)
    qtbot.waitUntil(lambda: len(window.session.models) == 1, timeout=30000)
    assert Path(next(iter(window.session.models.values())).path).name == "cxrnet-demo.pt"


def test_multi_label_predictions_are_listed_most_probable_first() -> None:
    from cxr_studio.gui.docks.models_dock import prediction_order

    assert prediction_order([0.3, 0.7], multi_label=False) == [(0, 0.3), (1, 0.7)]
    assert [i for i, _ in prediction_order([0.1, 0.9, 0.5, 0.2], multi_label=True)] == [1, 2, 3, 0]
    assert [i for i, _ in prediction_order([0.2, 0.5, 0.3], multi_label=False)] == [1, 2, 0]


def test_the_status_bar_shows_the_verdict_of_the_current_model(qtbot: Any, window: Any, radiograph_file: Path,
                                                             tiny_checkpoint: Path, monkeypatch: Any) -> None:
    import cxr_studio.core.models.shipped as shipped

    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: tiny_checkpoint)
    window.open_image(radiograph_file)
    qtbot.waitUntil(lambda: window.session.forward is not None, timeout=30000)
    text = window.prediction_label.text()
    probs = window.session.forward.probabilities
    top = ["normal", "abnormal"][int(probs[1] > probs[0])]
    assert text.startswith(top) and text.endswith("%")  # no operating point: the most probable class


def test_a_dropped_checkpoint_replaces_the_default(qtbot: Any, window: Any, radiograph_file: Path,
                                                   tiny_checkpoint: Path, monkeypatch: Any) -> None:
    from PySide6.QtCore import QMimeData, QUrl

    import cxr_studio.core.models.shipped as shipped

    called = []
    monkeypatch.setattr(shipped, "default_model_for_radiographs", lambda: called.append(1) or tiny_checkpoint)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(radiograph_file)), QUrl.fromLocalFile(str(tiny_checkpoint))])

    class _Drop:
        def mimeData(self) -> Any:
            return mime

        def acceptProposedAction(self) -> None:
            pass

    window.dropEvent(_Drop())
    qtbot.waitUntil(lambda: len(window.session.models) == 1, timeout=30000)
    assert not called and window.auto_default_model


def test_load_dialog_asks_the_architecture_of_a_bare_state_dict(qtbot: Any, window: Any, tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    import torch
    import torchvision
    from PySide6.QtWidgets import QFileDialog, QInputDialog

    torch.manual_seed(0)
    sd = tmp_path / "resnet18_cxr.pth"
    torch.save({"state_dict": torchvision.models.resnet18(num_classes=3).state_dict()}, sd)
    asked = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(sd), "")))
    monkeypatch.setattr(QInputDialog, "getItem",
                        staticmethod(lambda *a, **k: asked.append(a[3]) or ("resnet18", True)))
    window.models_dock.ask_load()
    assert asked and "resnet18" in asked[0] and "cxrnet" in asked[0]
    qtbot.waitUntil(lambda: len(window.session.models) == 1, timeout=60000)
    loaded = next(iter(window.session.models.values()))
    assert len(loaded.class_names) == 3  # outputs read from the head


def test_load_dialog_cancelled_at_the_architecture_loads_nothing(qtbot: Any, window: Any, tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    import torch
    from PySide6.QtWidgets import QFileDialog, QInputDialog

    sd = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}, sd)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(sd), "")))
    monkeypatch.setattr(QInputDialog, "getItem", staticmethod(lambda *a, **k: ("", False)))
    window.models_dock.ask_load()
    qtbot.wait(300)
    assert not window.session.models
