"""Issue 15: "Export folder…" runs the batch exporter's API (`batch.run`) in the worker with the
model shown, counts the images done in its progress dialog, and writes the same sidecar keys as the
overlay export; a Cancel before the export has started closes the dialog too."""
from __future__ import annotations

import csv
import json
import threading
from pathlib import Path
from typing import Any


def test_folder_export_calls_the_api_with_per_image_progress(qtbot: Any, loaded_window: Any, tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    from cxr_studio import batch
    from cxr_studio.core.phantoms.phantom import write_phantom_dataset

    w = loaded_window
    src = write_phantom_dataset(tmp_path / "data", 3, seed=11, size=128) / "CXR_png"
    out = tmp_path / "out"
    calls: list[tuple] = []
    real = batch.run

    def spy(images: Any, options: Any, progress: Any = None, cancel: Any = None) -> Any:
        calls.append((images, options, progress is not None, cancel is not None))
        return real(images, options, progress=progress, cancel=cancel)

    monkeypatch.setattr(batch, "run", spy)
    seen: list[float] = []
    values: list[tuple[int, int]] = []

    def progressed(label: str, fraction: float, message: str) -> None:
        if label == "exporting folder":  # connected after the dialog's own slot: it has run
            seen.append(fraction)
            values.append((w.folder_dialog.value(), w.folder_dialog.maximum()))

    codes: list[int] = []
    w.export_folder(str(src), str(out), on_done=codes.append)
    w.bridge.progress.connect(progressed)  # no event is delivered before this line
    qtbot.waitUntil(lambda: bool(codes), timeout=300000)
    w.bridge.progress.disconnect(progressed)
    assert codes == [0] and w.last_error is None
    assert len(calls) == 1
    images, options, with_progress, with_cancel = calls[0]
    assert images == [str(src)] and with_progress and with_cancel
    assert options.loaded is w.session.current_model  # the model shown, not opened again
    assert (options.layer, options.method, options.threshold) == (w.session.layer, w.session.method,
                                                                  w.session.threshold)
    assert seen == [0.0, 1 / 3, 2 / 3, 1.0]  # once per image as it starts, then the end
    assert values[:3] == [(0, 3), (1, 3), (2, 3)]  # the dialog counts images done
    # the last: 3 of 3, or already closed (a modal dialog's setValue processes events: the end arrives)
    assert values[3] in ((3, 3), (-1, 3))
    assert not w.folder_dialog.isVisible()
    assert "Exported 3 image(s)" in w.statusBar().currentMessage()
    with open(out / "summary.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok"] * 3
    # the overlay export of the view writes the same sidecar keys as the folder export
    written: list[Any] = []
    w.export_overlay(tmp_path / "view", on_done=written.append)
    qtbot.waitUntil(lambda: bool(written), timeout=60000)
    view = json.loads(written[0].json.read_text())
    folder = json.loads(next(out.glob("*.json")).read_text())
    assert set(view) == set(folder)
    assert view["model_id"] == w.session.current_model_id and view["probabilities"] is not None


def test_cancel_before_the_folder_export_started(qtbot: Any, loaded_window: Any, tmp_path: Path) -> None:
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom

    w = loaded_window
    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "p.png", make_phantom(1, size=128).image)
    release = threading.Event()
    w.bridge.submit("busy", release.wait, 30)  # the worker is busy: the export waits in the queue
    codes: list[int] = []
    w.export_folder(str(src), str(tmp_path / "out"), on_done=codes.append)
    from PySide6.QtWidgets import QPushButton

    w.folder_dialog.findChild(QPushButton).click()
    assert codes == [1] and not w.folder_dialog.isVisible()  # closed at once, not left waiting
    release.set()
    qtbot.waitUntil(lambda: w.bridge.pending == 0, timeout=30000)
    assert codes == [1] and w.last_error is None and not (tmp_path / "out").exists()
    assert "cancelled" in w.statusBar().currentMessage().lower()
