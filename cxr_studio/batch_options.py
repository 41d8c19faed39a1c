"""What one folder export is asked to do: `ExportOptions` (everything `cxr-studio export`'s flags
hold, as a typed dataclass), the command line that fills it (`build_parser`, `options_from_args`), and
`UsageError` (a problem that stops the whole run: exit code 2 on the command line).

Torch-free: the command line is parsed, and its usage errors reported, before torch is imported.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .core.inspect.method_names import HEATMAP_METHODS, RANKINGS as _ALL_RANKINGS, SCALES
from .core.render import COLORMAPS, DEFAULT_OPACITY, DEFAULT_THRESHOLD

METHODS = HEATMAP_METHODS  # the one list (core.method_names)
RANKINGS = tuple(r for r in _ALL_RANKINGS if r != "region")  # a folder export has no drawn region
STRONGEST = "strongest"


class UsageError(ValueError):
    """A problem with the command line or its inputs that stops the whole run (exit code 2)."""


@dataclass(frozen=True)
class ExportOptions:
    """One folder export's settings: the flags of ``cxr-studio export`` (same names, same defaults).

    The model is ``loaded`` when given (an already opened `LoadedCheckpoint`: the app passes the one
    it shows), else the file ``checkpoint`` opened with ``arch`` ... ``multi_label`` on ``device``;
    ``checkpoint`` None means the shipped model for radiographs (or ``arch="xrv:..."`` weights).
    ``layer`` None is the model's deepest conv layer; ``channel`` a number or ``"strongest"`` (by
    ``ranking``); ``class_index`` / ``class_name`` the class Grad-CAM explains (None: the predicted one).
    ``segmentation`` None keeps the checkpoint's method. ``progress_bar`` draws tqdm's bar on stderr
    (the command line does unless ``--no-progress``; off for other callers)."""

    out: str | Path
    checkpoint: str | None = None
    loaded: Any = None
    arch: str | None = None
    classes: list[str] | None = None
    input_size: int | None = None
    preset: str | None = None
    multi_label: bool | None = None
    layer: str | None = None
    channel: int | str = STRONGEST
    method: str = "activation"
    class_index: int | None = None
    class_name: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    opacity: float = DEFAULT_OPACITY
    colormap: str = "jet"
    scale: str = "channel"
    ranking: str = "max"
    segmentation: str | None = None
    device: str | None = None
    overwrite: bool = False
    skip_existing: bool = False
    progress_bar: bool = False

    def check(self) -> None:
        """Raise `UsageError` for a value the command line's parser would have refused."""
        from .core.imaging.spec import SEGMENTATION_METHODS

        for name in ("threshold", "opacity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise UsageError(f"{name} must be a number between 0 and 1, got {v!r}.")
        for name, choices in (("method", METHODS), ("colormap", COLORMAPS), ("scale", SCALES),
                              ("ranking", RANKINGS)):
            if getattr(self, name) not in choices:
                raise UsageError(f"Unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}.")
        if self.segmentation is not None and self.segmentation not in SEGMENTATION_METHODS:
            raise UsageError(f"Unknown segmentation {self.segmentation!r}; choose one of "
                             f"{', '.join(SEGMENTATION_METHODS)}.")
        c = self.channel
        if c != STRONGEST and (isinstance(c, bool) or not isinstance(c, int) or c < 0):
            raise UsageError(f"channel must be a channel number >= 0 or 'strongest', got {c!r}.")
        if not str(self.out):
            raise UsageError("Name an output folder.")

    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of ``models.importers.open_model`` (how to read the model file)."""
        from .core.models.args import model_options

        return model_options(self)  # the same fields the command-line flags fill


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The options a parsed ``cxr-studio export`` command line holds."""
    names = {f.name for f in fields(ExportOptions)} - {"loaded", "progress_bar"}
    return ExportOptions(**{n: getattr(args, n) for n in names}, progress_bar=not args.no_progress)


def _unit(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


def _channel(text: str) -> int | str:
    if text == STRONGEST:
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a channel number or 'strongest', got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"channel must be >= 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .core.imaging.spec import SEGMENTATION_METHODS

    p = argparse.ArgumentParser(
        prog="cxr-studio export",
        description="Export heatmap overlays (PNG + raw map .npy + JSON sidecar) for images or folders, "
        "without opening a window.",
        epilog="Exit codes: 0 all exported, 1 some images failed, 2 usage error, 130 interrupted.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and/or folders of images")
    p.add_argument("--checkpoint", default=None,
                   help="trained checkpoint (.pt) to explain (default: the shipped TB model, "
                        "resources/models/cxrnet-tb.pt)")
    from .core.models.args import add_model_arguments

    add_model_arguments(p)  # --arch, --classes, --input-size, --preset, --multi-label
    p.add_argument("--out", required=True, help="output folder (created when missing)")
    p.add_argument("--layer", default=None, help="layer name (default: the model's deepest conv layer)")
    p.add_argument("--channel", type=_channel, default=STRONGEST, help="channel number or 'strongest' (default)")
    p.add_argument("--method", choices=METHODS, default="activation", help="heatmap source (default: activation)")
    p.add_argument("--class-index", type=int, default=None, help="class explained by Grad-CAM (default: predicted)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME|INDEX",
                   help="class explained by Grad-CAM, by name or index (default: the most probable)")
    p.add_argument("--threshold", type=_unit, default=DEFAULT_THRESHOLD,
                   help=f"map values below this are transparent (0..1; default {DEFAULT_THRESHOLD}, as the app)")
    p.add_argument("--opacity", type=_unit, default=DEFAULT_OPACITY,
                   help=f"overlay opacity (0..1, default {DEFAULT_OPACITY:g})")
    p.add_argument("--colormap", choices=COLORMAPS, default="jet", help="colormap (default: jet, as the paper)")
    p.add_argument("--scale", choices=SCALES, default="channel", help="map scaling (default: channel)")
    p.add_argument("--ranking", choices=RANKINGS, default="max", help="how 'strongest' is chosen (default: max)")
    p.add_argument("--segmentation", choices=SEGMENTATION_METHODS, default=None,
                   help="lung segmentation method (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--overwrite", action="store_true", help="overwrite existing exports of the same name")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip images this checkpoint has already exported into --out (to continue an interrupted run)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return p
