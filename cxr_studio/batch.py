"""`cxr-studio export`: batch export of heatmap overlays without a window.

For every image (files, or the images directly inside folders): read it, preprocess it with the
checkpoint's PreprocessSpec (``--segmentation`` overrides the method), run the model once, compute
the heatmap of one layer (default: the deepest conv layer) and channel (default: the strongest by
``--ranking``) or Grad-CAM, and write ``<name>.png`` / ``.npy`` / ``.json`` into ``--out`` (a free
name is chosen; nothing is overwritten unless ``--overwrite``). ``summary.csv`` lists every file with
its prediction, channel and status.

Exit codes: 0 all images exported, 1 some failed (each reported in one line on stderr),
2 usage error (bad option, unreadable checkpoint, unknown layer, no images).
"""
from __future__ import annotations

import argparse
import csv
import io as _io
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .core.render import COLORMAPS
from .core.atomic import write_text_atomic

METHODS = ("activation", "gradcam", "gradcam++")
RANKINGS = ("max", "mean", "lungs")


class UsageError(ValueError):
    """A problem with the command line or its inputs that stops the whole run (exit code 2)."""


def _unit(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return v


def _channel(text: str) -> int | str:
    if text == "strongest":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a channel number or 'strongest', got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"channel must be >= 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .core.pipeline import SEGMENTATION_METHODS

    p = argparse.ArgumentParser(
        prog="cxr-studio export",
        description="Export heatmap overlays (PNG + raw map .npy + JSON sidecar) for images or folders, "
        "without opening a window.",
        epilog="Exit codes: 0 all exported, 1 some images failed, 2 usage error.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and/or folders of images")
    p.add_argument("--checkpoint", required=True, help="trained checkpoint (.pt) to explain")
    p.add_argument("--out", required=True, help="output folder (created when missing)")
    p.add_argument("--layer", default=None, help="layer name (default: the model's deepest conv layer)")
    p.add_argument("--channel", type=_channel, default="strongest", help="channel number or 'strongest' (default)")
    p.add_argument("--method", choices=METHODS, default="activation", help="heatmap source (default: activation)")
    p.add_argument("--class-index", type=int, default=None, help="class explained by Grad-CAM (default: predicted)")
    p.add_argument("--threshold", type=_unit, default=0.0, help="map values below this are transparent (0..1)")
    p.add_argument("--opacity", type=_unit, default=0.5, help="overlay opacity (0..1, default 0.5)")
    p.add_argument("--colormap", choices=COLORMAPS, default="jet", help="colormap (default: jet, as the paper)")
    p.add_argument("--scale", choices=("channel", "layer"), default="channel", help="map scaling (default: channel)")
    p.add_argument("--ranking", choices=RANKINGS, default="max", help="how 'strongest' is chosen (default: max)")
    p.add_argument("--segmentation", choices=SEGMENTATION_METHODS, default=None,
                   help="lung segmentation method (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--overwrite", action="store_true", help="overwrite existing exports of the same name")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return p


def _device(pref: str | None) -> Any:
    try:
        from .core.engine import choose_device
    except ImportError:  # engine not available: plain torch
        import torch

        try:
            return torch.device(pref or "cpu")
        except RuntimeError as e:
            raise UsageError(f"Unknown device {pref!r}: {e}") from None
    try:
        return choose_device(pref)
    except ValueError as e:
        raise UsageError(str(e)) from None


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given (order kept) and the supported images directly inside folders."""
    from .core.io import list_images

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(list_images(p))
        else:
            out.append(p)  # a missing or unreadable file is reported per image later
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """Load the checkpoint, resolve the spec and the layer; every failure is a UsageError."""
    from .core.checkpoint import load_checkpoint
    from .core.models.layers import deepest_conv, resolve_layer

    device = _device(args.device)
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"Checkpoint {args.checkpoint} does not exist.")
    try:
        loaded = load_checkpoint(args.checkpoint, device)
    except (ValueError, OSError, RuntimeError) as e:
        raise UsageError(f"Cannot load checkpoint {args.checkpoint}: {e}") from None
    spec = loaded.spec
    if args.segmentation:
        spec = spec.replace(segmentation=args.segmentation)
    try:
        layer = args.layer or deepest_conv(loaded.model)
        resolve_layer(loaded.model, layer)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from .core.views import module_channels

    if module_channels(loaded.model, layer) is None:
        raise UsageError(f"Layer {layer!r} has no spatial channels (fully connected); pick a conv, ReLU or pool layer.")
    if args.ranking == "lungs" and spec.segmentation == "none" and args.channel == "strongest" \
            and args.method == "activation":
        raise UsageError("--ranking lungs needs a lung mask, but segmentation is 'none'; pass --segmentation.")
    n_cls = len(loaded.class_names)
    if args.class_index is not None and not 0 <= args.class_index < n_cls:
        raise UsageError(f"--class-index {args.class_index} is out of range: the model has {n_cls} classes.")
    return loaded, spec, layer


def export_one(
    path: Path, loaded: Any, spec: Any, layer: str, args: argparse.Namespace, taken: set[str] | None = None
) -> dict[str, Any]:
    """Export one image; returns its summary row. Raises on any failure (caught by the caller).

    ``taken``: stems already written in this run (two inputs called ``a.png`` never share a name,
    even with ``--overwrite``)."""
    from .core.export import export_view, unique_stem
    from .core.io import read_image
    from .core.pipeline import preprocess
    from .core.views import compute_forward, compute_heatmap

    radiograph = read_image(path)
    pre = preprocess(radiograph, spec)
    forward = compute_forward(loaded, pre, [layer])
    hm = compute_heatmap(
        loaded, pre, forward, layer, channel=args.channel, method=args.method,
        class_index=args.class_index, scale=args.scale, ranking=args.ranking,
    )
    out = Path(args.out)
    taken = set() if taken is None else taken
    stem, i = None, 0
    while stem is None or stem.name in taken:  # --overwrite: deterministic names; else free ones
        name = path.stem if i == 0 else f"{path.stem}_{i}"
        stem = out / name if args.overwrite else unique_stem(out, name)
        i += 1
    probs = [float(p) for p in forward.probabilities]
    settings = {
        "image_path": str(path),
        "checkpoint_path": str(loaded.path) if getattr(loaded, "path", None) else args.checkpoint,
        "checkpoint_sha256": getattr(loaded, "sha256", None),
        "arch": loaded.arch,
        "class_names": list(loaded.class_names),
        "probabilities": probs,
        **hm.settings(),
        "threshold": args.threshold,
        "opacity": args.opacity,
        "colormap": args.colormap,
        "spec": spec.to_dict(),
        "geometry": pre.geometry.to_dict(),
        "segmentation_used": pre.segmentation_method,
        "warnings": list(pre.warnings),
    }
    res = export_view(stem, radiograph.pixels, hm.map_original, settings, overwrite=args.overwrite)
    taken.add(stem.name)
    row: dict[str, Any] = {"file": str(path), "status": "ok", "output": res.png.name, "error": ""}
    row.update({f"p_{name}": f"{p:.6f}" for name, p in zip(loaded.class_names, probs)})
    row["predicted"] = loaded.class_names[int(max(range(len(probs)), key=probs.__getitem__))] if probs else ""
    row["layer"] = layer
    row["channel"] = "" if hm.channel is None else hm.channel
    return row


def write_summary(
    out: Path, rows: list[dict[str, Any]], class_names: Sequence[str], overwrite: bool = False
) -> Path:
    """Write summary.csv atomically (summary_1.csv... when taken, unless ``overwrite``); returns its path."""
    cols = ["file", "status", "output", "predicted"] + [f"p_{c}" for c in class_names]
    cols += ["layer", "channel", "error"]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    dest = out / "summary.csv"
    i = 1
    while dest.exists() and not overwrite:
        dest = out / f"summary_{i}.csv"
        i += 1
    return write_text_atomic(dest, buf.getvalue())


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if isinstance(e, ValueError) else f"{type(e).__name__}: {msg}"


def main(
    argv: Sequence[str] | None = None,
    *,
    cancel: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> int:
    """Run the batch exporter; returns the exit code (0 ok, 1 some failed or cancelled, 2 usage error).

    ``cancel`` (a ``threading.Event``) is checked between images: the rest are marked "cancelled" in
    the summary. ``progress(fraction, message)`` is called after each image. Both match the engine
    Worker's ``cancellable=True`` keyword arguments, so the GUI can run this in its worker.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        loaded, spec, layer = _prepare(args)
        images = collect_images(args.inputs)
        if not images:
            raise UsageError("No images found in " + ", ".join(args.inputs) + ".")
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"Cannot create the output folder {out}: {e.strerror}.") from None
    except UsageError as e:
        print(f"cxr-studio export: error: {e}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    failed = 0
    bar = tqdm(images, desc="Exporting", unit="image", file=sys.stderr, disable=args.no_progress)
    for i, path in enumerate(bar):
        if cancel is not None and cancel.is_set():
            rows.extend({"file": str(p), "status": "cancelled", "error": "cancelled"} for p in images[i:])
            failed += len(images) - i
            break
        if progress is not None:
            progress(i / len(images), f"Exporting {path.name} ({i + 1}/{len(images)})")
        try:
            rows.append(export_one(path, loaded, spec, layer, args, taken))
        except Exception as e:  # noqa: BLE001 - one bad image must not stop the batch
            failed += 1
            msg = _one_line(e)
            tqdm.write(f"{path}: {msg}", file=sys.stderr)
            rows.append({"file": str(path), "status": "failed", "error": msg})
    bar.close()
    if progress is not None:
        progress(1.0, "Export finished")
    summary = write_summary(Path(args.out), rows, loaded.class_names, overwrite=args.overwrite)
    ok = len(images) - failed
    print(f"Exported {ok} of {len(images)} image(s) to {args.out}; {failed} failed. Summary: {summary}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
