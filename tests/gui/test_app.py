"""The `cxr-studio` entry point: arguments, `--screenshot` in a subprocess (offscreen)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"QT_QPA_PLATFORM": "offscreen", "CXR_STUDIO_SETTINGS": str(tmp_path / "settings.ini"),
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "2"})
    return env


def test_arguments() -> None:
    from cxr_studio.gui.app import parse_args

    a = parse_args(["img.png", "--checkpoint", "a.pt", "--checkpoint", "b.pt", "--device", "cpu", "--light"])
    assert a.image == "img.png" and a.checkpoint == ["a.pt", "b.pt"] and a.device == "cpu" and a.light
    assert parse_args(["--demo", "--screenshot", "s.png"]).screenshot == "s.png"


def test_demo_screenshot_in_a_subprocess(tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    r = subprocess.run([sys.executable, "-m", "cxr_studio.cli", "--demo", "--screenshot", str(shot)],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 600
    assert img.std() > 10  # not a blank window


def test_screenshot_times_out_with_an_error_code(qapp: Any, tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """An image whose heatmap never comes: the screenshot mode gives up with exit code 3 and says why
    (in-process: the same main() the command runs)."""
    from cxr_studio.gui.app import EXIT_SCREENSHOT_TIMEOUT, main
    from cxr_studio.gui.main_window import MainWindow

    monkeypatch.setenv("CXR_STUDIO_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main() installs its own; restored after
    monkeypatch.setattr(MainWindow, "open_image", lambda self, path: None)  # it never opens
    shot = tmp_path / "never.png"
    assert main([str(tmp_path / "x.png"), "--screenshot", str(shot), "--screenshot-timeout", "0.5"]) \
        == EXIT_SCREENSHOT_TIMEOUT
    assert "no heatmap" in capsys.readouterr().err and not shot.exists()


def test_screenshot_without_an_image_saves_the_welcome_page(qapp: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Nothing to draw: no wait for a heatmap that cannot come; the welcome page is saved, exit 0."""
    from cxr_studio.gui.app import main

    monkeypatch.setenv("CXR_STUDIO_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    shot = tmp_path / "welcome.png"
    assert main(["--screenshot", str(shot), "--screenshot-timeout", "60", "--geometry", "1366x768"]) == 0
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (768, 1366) and img.std() > 10


def test_bad_device_is_one_line(tmp_path: Path, capsys: Any) -> None:
    from cxr_studio.gui.app import main

    assert main(["--device", "no-such-device"]) == 2
    err = capsys.readouterr().err
    assert "no-such-device" in err and "Traceback" not in err


def test_an_image_alone_opens_with_the_shipped_tb_model(tmp_path: Path) -> None:
    """`cxr-studio IMAGE` (no --checkpoint): the shipped model for radiographs is loaded, so a heatmap
    appears and the screenshot is written (without a model it would time out with exit code 3)."""
    from cxr_studio.core.imaging.io import write_png
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.resources import TB_MODEL, find_resource
    from cxr_studio.core.models.shipped import default_model_for_radiographs

    assert default_model_for_radiographs() == find_resource(TB_MODEL)
    img, shot = tmp_path / "chest.png", tmp_path / "shot.png"
    write_png(img, make_phantom(2, size=384, abnormal=True).image)
    r = subprocess.run([sys.executable, "-m", "cxr_studio.cli", str(img), "--screenshot", str(shot),
                        "--screenshot-timeout", "120"], env=_env(tmp_path), capture_output=True, text=True,
                       timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.exists() and "Traceback" not in r.stderr
