"""`cxr-studio --cohort ROOT [--checkpoint CKPT] [--cohort-csv CSV] [--screenshot PNG]`: open the
cohort view, score every image of ROOT with the model, write the table as CSV (columns
``path,label,probability,prediction,correct,error``) and, with --screenshot, save the window and exit."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

EXIT_COHORT_FAILED = 5


def check(args: Any) -> None:
    """Refuse a bad --cohort / --cohort-csv before any window opens (one sentence, ValueError)."""
    if args.cohort_csv and not args.cohort:
        raise ValueError("--cohort-csv needs --cohort ROOT (the images to score).")
    if args.cohort:
        root = Path(args.cohort)
        if not root.exists():
            raise ValueError(f"--cohort {root}: no such folder or CSV file.")
        if args.cohort_csv:
            from cxr_studio.core.atomic import check_writable_file

            check_writable_file(args.cohort_csv, "the cohort table (--cohort-csv)")


def run(window: Any, args: Any, status: dict, shoot: Callable[[], None] | None) -> None:
    """Start scoring once a model is there; then write the CSV and, with ``shoot``, the screenshot."""
    from PySide6.QtCore import QTimer

    from .layout import show_bottom

    show_bottom(window, window.cohort_dock)
    if not args.checkpoint:
        window.load_default_model()

    def done(res: Any) -> None:
        if res is None:
            print(f"cxr-studio: the cohort could not be scored: {window.last_error or 'cancelled'}", file=sys.stderr)
            status["code"] = EXIT_COHORT_FAILED
            window.close()
            return
        if args.cohort_csv:
            try:
                out = window.cohort_dock.export_csv(args.cohort_csv)
                print(f"cxr-studio: wrote {out} ({len(res.rows)} image(s))")
            except (OSError, ValueError) as e:
                print(f"cxr-studio: could not write {args.cohort_csv}: {e}", file=sys.stderr)
                status["code"] = EXIT_COHORT_FAILED
        if shoot is not None:
            QTimer.singleShot(500, shoot)  # let the table and the ROC curve paint

    window.cohort_dock.score_when_ready(str(args.cohort), done)
