"""`cxr-studio export`: batch export of heatmap overlays without a window.

For every image (files, or the images directly inside folders): read it, preprocess it with the
checkpoint's PreprocessSpec (``--segmentation`` overrides the method), run the model once, compute
the heatmap of one layer (default: the deepest conv layer) and channel (default: the strongest by
``--ranking``) or Grad-CAM, and write ``<name>.png`` / ``.npy`` / ``.json`` into ``--out`` (a free
name is chosen; nothing is overwritten unless ``--overwrite``). ``summary.csv`` lists every file with
its prediction (a two-class model's call read against the operating threshold its checkpoint
declares, in ``operating_point``, as the app reads it; else the most probable class), channel and status.

Exit codes: 0 all images exported, 1 some failed (each reported in one line on stderr),
2 usage error (bad option, unreadable checkpoint, unknown layer, no images, an output folder that
cannot be written: checked before any work), 130 interrupted (Ctrl-C: the summary of what was done
is written; ``--skip-existing`` continues). Two exports into one folder never overwrite each other:
every file is published with an exclusive create.

The work is `batch_run.run(images, ExportOptions(...), progress=None, cancel=None) -> BatchResult`
(also what the app's "Export folder…" calls); `main` only parses the command line into
`batch_options.ExportOptions`, calls it and reports.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from .batch_files import _no_images_message, already_exported, collect_images, write_summary  # noqa: F401
from .batch_options import (  # noqa: F401 - the names scripts have imported from here
    METHODS, RANKINGS, ExportOptions, UsageError, build_parser, options_from_args,
)
from .batch_run import BatchResult, export_one, run  # noqa: F401

__all__ = [
    "BatchResult", "ExportOptions", "METHODS", "RANKINGS", "UsageError", "already_exported", "build_parser",
    "collect_images", "export_one", "main", "options_from_args", "run", "write_summary",
]


def main(
    argv: Sequence[str] | None = None,
    *,
    cancel: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> int:
    """Run the batch exporter; returns the exit code (0 ok, 1 some failed or cancelled, 2 usage error,
    130 interrupted by Ctrl-C: the summary of what was done is written first).

    ``cancel`` and ``progress`` are passed to `run` (see there)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        result = run(args.inputs, options_from_args(args), progress=progress, cancel=cancel)
    except UsageError as e:
        print(f"cxr-studio export: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr-studio export: interrupted before any image was exported.", file=sys.stderr)
        return 130
    if result.summary_error:
        print(f"cxr-studio export: error: {result.summary_error}", file=sys.stderr)
    summary = result.summary if result.summary is not None else "not written"
    failed = result.failed + result.cancelled
    if result.interrupted:
        print(f"Interrupted: {result.exported} of {result.total} image(s) exported to {args.out}, {failed} failed. "
              f"Summary: {summary}. To continue, run the same command again with --skip-existing: the images "
              "already exported are skipped.", file=sys.stderr)
    else:
        print(f"Exported {result.exported} of {result.total} image(s) to {args.out}; {failed} failed. "
              f"Summary: {summary}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
