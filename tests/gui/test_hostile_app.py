"""Issue 16 case 12: `cxr-studio --screenshot` with a broken image or a missing checkpoint ends on
its own with the error and a non-zero exit code (not after the screenshot timeout); an unwritable
screenshot path is refused before the window opens.

Rule: an error that makes the requested output impossible ends a non-interactive run at once, in
words. The timeout below is long on purpose: exit code 4 (not 3, the timeout's) proves the run
ended because of the error, without measuring time.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from cxr_studio.core.imaging.io import write_png
from cxr_studio.core.phantoms.phantom import make_phantom


def run_app(args: list[str], tmp_path: Path, monkeypatch: Any) -> int:
    from cxr_studio.gui.app import main

    monkeypatch.setenv("CXR_STUDIO_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main() installs its own; restored after
    return main(args + ["--screenshot-timeout", "600"])


def test_screenshot_with_a_broken_image_exits_with_the_error(qapp: Any, tiny_checkpoint: Path, tmp_path: Path,
                                                             monkeypatch: Any, capsys: Any, caplog: Any) -> None:
    from cxr_studio.gui.app import EXIT_SCREENSHOT_ERROR

    caplog.set_level(logging.INFO)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    shot = tmp_path / "shot.png"
    code = run_app([str(broken), "--checkpoint", str(tiny_checkpoint), "--screenshot", str(shot)], tmp_path,
                   monkeypatch)
    err = capsys.readouterr().err
    assert code == EXIT_SCREENSHOT_ERROR and not shot.exists()
    assert "no screenshot written" in err and "broken.png" in err
    # the input's fault: one line in the log, no traceback (those are kept for bugs)
    failures = [r for r in caplog.records if "failed" in r.getMessage() and "broken.png" in r.getMessage()]
    assert failures and all(r.levelno == logging.WARNING and r.exc_info is None for r in failures)


def test_user_errors_and_bugs_are_told_apart() -> None:
    from cxr_studio.core.imaging.formats import ImageReadError
    from cxr_studio.gui.bridge import is_user_error

    assert is_user_error(ImageReadError("x.png does not exist")) and is_user_error(FileNotFoundError("x"))
    assert not is_user_error(ValueError("operands could not be broadcast together"))  # numpy's: a bug
    assert not is_user_error(KeyError("relu5")) and not is_user_error(RuntimeError("shape mismatch"))


def test_screenshot_with_a_missing_checkpoint_exits_with_the_error(qapp: Any, tmp_path: Path, monkeypatch: Any,
                                                                   capsys: Any) -> None:
    from cxr_studio.gui.app import EXIT_SCREENSHOT_ERROR

    image = tmp_path / "phantom.png"
    write_png(image, make_phantom(0, size=256).image)
    shot = tmp_path / "shot.png"
    code = run_app([str(image), "--checkpoint", str(tmp_path / "missing.pt"), "--screenshot", str(shot)],
                   tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert code == EXIT_SCREENSHOT_ERROR and not shot.exists()
    assert "no screenshot written" in err and "missing.pt" in err


def test_unwritable_screenshot_path_is_refused_first(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    code = run_app(["--demo", "--screenshot", str(tmp_path)], tmp_path, monkeypatch)  # a folder
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err and "Traceback" not in err


def test_no_screenshot_timer_outlives_the_window(qapp: Any, tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """The screenshot deadline belongs to the window: after an early exit it cannot fire later on a
    deleted window (it did, 600 s on, inside whatever test ran then: 'MainWindow already deleted')."""
    import shiboken6
    from PySide6 import QtCore
    from PySide6.QtCore import QCoreApplication, QEvent, QTimer

    made: list[QTimer] = []

    class RecordingTimer(QTimer):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(QtCore, "QTimer", RecordingTimer)  # main() imports it when it runs
    image = tmp_path / "phantom.png"
    write_png(image, make_phantom(0, size=256).image)
    run_app([str(image), "--checkpoint", str(tmp_path / "missing.pt"), "--screenshot", str(tmp_path / "s.png")],
            tmp_path, monkeypatch)
    capsys.readouterr()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert len(made) >= 2  # the error poll and the deadline are both the window's timers
    assert not [t for t in made if shiboken6.isValid(t) and t.isActive()]
