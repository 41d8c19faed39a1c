"""GUI test fixtures: a main window on a real worker, a tiny checkpoint, a phantom."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow cxrnet saved as a checkpoint (random weights, fixed seed)."""
    import torch

    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.models import build_model

    torch.manual_seed(0)
    kw = {"width": 0.125, "fc_width": 64}
    model = build_model("cxrnet", **kw)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-cxrnet.pt"
    spec = dict(model.default_preprocess)  # "auto" segmentation: the phantom's own mask is given
    save_checkpoint(path, model, arch="cxrnet", arch_kwargs=kw, class_names=["normal", "abnormal"],
                    preprocess=spec, provenance={"recipe": "test"})
    return path


@pytest.fixture(scope="session")
def phantom() -> Any:
    from cxr_studio.core.phantoms.phantom import make_phantom

    return make_phantom(5, size=384, abnormal=True)


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    from cxr_studio.gui.settings import Settings

    return Settings(tmp_path / "settings.ini")


@pytest.fixture(autouse=True)
def collect_qt_garbage_here() -> Iterator[None]:
    """After every GUI test, collect garbage on the GUI thread. Otherwise a test's dropped Qt wrappers
    (windows in reference cycles) can be collected later by whichever thread allocates next, such as
    the next test's worker thread, and a Qt object destroyed off its own thread crashes the process."""
    yield
    import gc

    gc.collect()


@pytest.fixture
def window(qtbot: Any, settings: Any) -> Iterator[Any]:
    """A shown main window with a real Worker and ModelManager on the CPU."""
    from cxr_studio.core.runtime.engine import ModelManager, Worker
    from cxr_studio.core.runtime.session import Session
    from cxr_studio.gui.main_window import MainWindow

    w = MainWindow(Session(), Worker(), ModelManager("cpu"), settings)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


@pytest.fixture
def loaded_window(qtbot: Any, window: Any, phantom: Any, tiny_checkpoint: Path) -> Any:
    """The window with the phantom and the tiny checkpoint open, first heatmap drawn."""
    open_loaded(qtbot, window, phantom, tiny_checkpoint)
    return window


def open_loaded(qtbot: Any, w: Any, phantom: Any, checkpoint: Path) -> None:
    """Open the phantom and the checkpoint and wait for the first heatmap."""
    w.open_radiograph(phantom.radiograph(), phantom.lung_mask, "phantom")
    w.controller.load_checkpoint(str(checkpoint))
    try:
        qtbot.waitUntil(lambda: w.session.heatmap is not None and w.view.heat_map is not None, timeout=60000)
    except Exception:
        raise AssertionError(f"no heatmap: error={w.last_error!r}, busy={w.busy_label.text()!r}, "
                             f"models={list(w.session.models)}, image={w.session.radiograph is not None}")
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=60000)
