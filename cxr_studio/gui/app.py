"""`cxr-studio`: start the desktop app.

    cxr-studio                       welcome page (offers the demo)
    cxr-studio --demo                demo phantom + demo model
    cxr-studio IMAGE                 open an image with the shipped TB model
    cxr-studio IMAGE --checkpoint C  open an image with one or more checkpoints
    cxr-studio ... --screenshot PNG  save the window once the first heatmap is drawn, then exit
                                     (with no image: the welcome page, once the models have loaded)

--screenshot exit codes: 0 written; 2 the path cannot be written (checked before the window opens);
3 no heatmap within the timeout; 4 an error was shown first (a broken image, a missing checkpoint),
which ends the run at once with that message.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from .theme import apply_theme  # noqa: E402,F401 - re-exported: scripts call app.apply_theme

log = logging.getLogger("cxr_studio.gui")
SCREENSHOT_TIMEOUT_S = 180.0
EXIT_SCREENSHOT_TIMEOUT = 3
EXIT_SCREENSHOT_ERROR = 4
ERROR_POLL_MS = 200
SETTLE_MS = 1500  # from the first heatmap (or an idle worker) to the screenshot: the docks fill in


def _window_parser(add_help: bool) -> argparse.ArgumentParser:
    """The window's own options (no torch import: the window opens before torch loads)."""
    p = argparse.ArgumentParser(prog="cxr-studio", add_help=add_help,
                                description="CXR Studio: what chest X-ray classifiers look at. "
                                "`cxr-studio export --help` for batch export without a window.")
    p.add_argument("image", nargs="?", help="radiograph to open (PNG, JPEG, TIFF, DICOM)")
    p.add_argument("--demo", action="store_true", help="open the synthetic demo phantom with the demo model")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT", help="checkpoint to load (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--screenshot", metavar="PNG", help="save the window once the first heatmap is drawn (with "
                   "no image: the welcome page, once the models have loaded), then exit")
    p.add_argument("--geometry", metavar="WxH", help="open the window at exactly this size, e.g. 1366x768 "
                   "(with the default layout; --screenshot then saves that size)")
    p.add_argument("--cohort", metavar="ROOT", help="score every image of a folder or data root in the cohort "
                   "view (with --screenshot: then save the window and exit)")
    p.add_argument("--cohort-csv", metavar="CSV", help="with --cohort: write the scored table here")
    p.add_argument("--screenshot-timeout", type=float, default=SCREENSHOT_TIMEOUT_S, help=argparse.SUPPRESS)
    p.add_argument("--light", action="store_true", help="light theme (default: dark)")
    return p


def quick_args(argv: list[str]) -> argparse.Namespace:
    """The window's options, parsed before torch is imported (model-file options are left for
    `parse_args`)."""
    return _window_parser(add_help=False).parse_known_args(argv)[0]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _window_parser(add_help=True)
    from cxr_studio.core.models.args import add_model_arguments  # plain argparse: no torch import

    add_model_arguments(p)  # --arch, --classes, --input-size, --preset, --multi-label for --checkpoint files
    return p.parse_args(argv)


def install_excepthook(window_getter: Any) -> None:
    """Unexpected exceptions: logged with the traceback, shown to the user as one message."""

    def hook(etype: type, value: BaseException, tb: Any) -> None:
        log.error("Unexpected error:\n%s", "".join(traceback.format_exception(etype, value, tb)))
        w = window_getter()
        if w is not None:
            try:
                from .bridge import describe_error

                w.show_error(f"Unexpected error: {describe_error(value)} (details in the log)")
            except Exception:  # noqa: BLE001
                pass

    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        parse_args(argv)  # prints the help (with the model-file options) and exits
    args = quick_args(argv)  # the window's options: no torch yet, so the window shows at once
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from cxr_studio.bundle_check import report_missing

    report_missing()  # before QApplication: a missing Qt platform plugin would abort without a word
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from cxr_studio.core.runtime.session import Session

    from .main_window import MainWindow
    from .settings import Settings

    from .layout import parse_geometry

    try:
        geometry = parse_geometry(args.geometry) if args.geometry else None
        from . import cohort_cli

        cohort_cli.check(args)
        if args.screenshot:  # the output path is checked before the window opens
            from cxr_studio.core.atomic import check_writable_file

            check_writable_file(args.screenshot, "the screenshot")
    except ValueError as e:
        print(f"cxr-studio: {e}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(["cxr-studio"])
    app.setApplicationName("CXR Studio")
    app.setDesktopFileName("cxr-studio")
    app.setOrganizationName("cxr-studio")
    from cxr_studio.core.resources import find_resource

    icon = find_resource("icons/cxr-studio-256.png")
    if icon is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))
    settings = Settings()
    apply_theme("light" if args.light else settings.theme)
    window = MainWindow(Session(), None, None, settings)  # the worker and models come once torch is in
    if args.light:
        window.light_action.setChecked(True)
    install_excepthook(lambda: window)
    window.show()
    if geometry is not None:  # once shown: the dock layout then knows its real sizes
        window.set_exact_size(*geometry)
    window.busy_label.setText("loading torch and the models…")
    app.processEvents()  # the first window is on screen before the heavy imports
    try:
        args = parse_args(argv)
        from cxr_studio.core.runtime.engine import ModelManager, Worker, choose_device

        device = choose_device(args.device)
    except (ValueError, SystemExit) as e:
        if not isinstance(e, SystemExit):
            print(f"cxr-studio: {e}", file=sys.stderr)
        window.close()
        window.deleteLater()
        return 2 if not isinstance(e, SystemExit) else int(e.code or 0)
    manager = ModelManager(device)
    from cxr_studio.core.models.args import model_options

    for ck in args.checkpoint:  # how to read the files named on the command line
        manager.open_options[os.path.abspath(ck)] = model_options(args)
    window.attach_engine(Worker(), manager)
    window.busy_label.setText("ready")
    status = {"code": 0}

    if args.screenshot:
        out = Path(args.screenshot)

        def shoot() -> None:
            errors.stop()
            deadline.stop()
            window.view.graphics.repaint()
            ok = window.grab().save(str(out))
            status["code"] = 0 if ok else 1
            if not ok:
                print(f"cxr-studio: could not write the screenshot {out}", file=sys.stderr)
            window.close()

        def on_heatmap() -> None:
            window.heatmap_drawn.disconnect(on_heatmap)
            QTimer.singleShot(SETTLE_MS, window, shoot)  # let the docks (thumbnails, mosaic) fill in

        def timeout() -> None:
            print(f"cxr-studio: no heatmap appeared within {args.screenshot_timeout:.0f} s; no screenshot "
                  f"written ({window.last_error or 'no error reported'})", file=sys.stderr)
            status["code"] = EXIT_SCREENSHOT_TIMEOUT
            window.close()

        def error_shown() -> None:  # a broken image, a missing checkpoint: no heatmap will come
            if window.last_error and not window._closed:
                errors.stop()
                deadline.stop()
                print(f"cxr-studio: no screenshot written: {window.last_error}", file=sys.stderr)
                status["code"] = EXIT_SCREENSHOT_ERROR
                window.close()

        def when_idle() -> None:
            worker = window.bridge.worker
            if worker is not None and worker.wait_idle(0):
                idle.stop()
                QTimer.singleShot(SETTLE_MS, window, shoot)

        idle = QTimer(window)
        idle.timeout.connect(when_idle)
        if not (args.cohort or args.demo or args.image):  # nothing to draw: the welcome page, once the
            idle.start(ERROR_POLL_MS)  # models named with --checkpoint have loaded
        elif not args.cohort:  # the cohort's screenshot waits for the scores instead
            window.heatmap_drawn.connect(on_heatmap)
        deadline = QTimer(window)  # the window's child: it dies with the window, never fires on a deleted one
        deadline.setSingleShot(True)
        deadline.timeout.connect(timeout)
        deadline.start(int(args.screenshot_timeout * 1000))
        errors = QTimer(window)  # errors are polled: show_error is reached from many signals
        errors.timeout.connect(error_shown)
        errors.start(ERROR_POLL_MS)

    if args.demo:
        window.open_demo()
    elif args.image:
        window.auto_default_model = not args.checkpoint  # IMAGE alone opens with the shipped TB model
        window.open_image(args.image)
    for ck in args.checkpoint:
        window.controller.load_checkpoint(os.path.abspath(ck))
    if args.cohort:
        cohort_cli.run(window, args, status, shoot if args.screenshot else None)
    # A local loop that ends when the window closes (not app.exec()/quit(): quitting the application
    # would make every later event loop in this process return at once, e.g. when run in-process).
    loop = QEventLoop()
    window.closed.connect(loop.quit)
    quit_on_last = app.quitOnLastWindowClosed()
    app.setQuitOnLastWindowClosed(False)
    # Garbage is collected on the GUI thread only (pyqtgraph's collector: automatic gc off, a timer
    # collects): a Qt object in a reference cycle collected by the worker thread crashes the process.
    from pyqtgraph.util.garbage_collector import GarbageCollector

    collector = GarbageCollector(interval=1.0)
    try:
        code = loop.exec()
    finally:
        collector.timer.stop()
        import gc

        gc.enable()
        app.setQuitOnLastWindowClosed(quit_on_last)
    if not window._closed:
        window.close()
    window.deleteLater()
    return status["code"] or code


if __name__ == "__main__":
    sys.exit(main())
