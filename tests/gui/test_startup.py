"""Issue 17 item 6: the first window does not wait for torch; work asked for before the worker is
attached runs once it is. (Speed itself is measured by benchmarks/bench_startup.py.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROBE = r"""
import sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from cxr_studio.core.runtime.session import Session
from cxr_studio.gui.main_window import MainWindow
from cxr_studio.gui.settings import Settings
w = MainWindow(Session(), None, None, Settings(sys.argv[1]))
w.show(); app.processEvents()
print("torch loaded:", "torch" in sys.modules, "|", w.models_dock.device.text(), "|", w.welcome.model_note.text())
w.close()
"""


def test_the_window_is_built_and_shown_before_torch_is_imported(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "s.ini")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "torch loaded: False | Device: loading… | Loading the models…" in r.stdout


def test_jobs_asked_for_during_start_up_run_once_the_worker_is_attached(qtbot: Any, settings: Any,
                                                                        phantom: Any) -> None:
    from cxr_studio.core.runtime.engine import ModelManager, Worker
    from cxr_studio.core.runtime.session import Session
    from cxr_studio.gui.main_window import MainWindow

    w = MainWindow(Session(), None, None, settings)
    qtbot.addWidget(w)
    w.show()
    assert w.welcome.model_note.text() == "Loading the models…" and w.models_dock.shipped.count() == 0
    got: list[int] = []
    w.bridge.submit("early", lambda: 41 + 1, on_result=got.append)
    w.open_radiograph(phantom.radiograph(), phantom.lung_mask, "early phantom")
    assert w.bridge.pending == 2 and not got  # waiting for the worker
    w.attach_engine(Worker(), ModelManager("cpu"))
    qtbot.waitUntil(lambda: got == [42] and w.session.preprocessed is not None, timeout=60000)
    assert w.models_dock.shipped.count() >= 1 and "Loading" not in w.welcome.model_note.text()
    assert w.models_dock.device.text().startswith("Device: ") and "loading" not in w.models_dock.device.text()
    w.close()
