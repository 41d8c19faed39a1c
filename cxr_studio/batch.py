"""`cxr-studio export`: batch export of heatmap overlays without a window.

For every image (files, or the images directly inside folders): read it, preprocess it with the
checkpoint's PreprocessSpec (``--segmentation`` overrides the method), run the model once, compute
the heatmap of one layer (default: the deepest conv layer) and channel (default: the strongest by
``--ranking``) or Grad-CAM, and write ``<name>.png`` / ``.npy`` / ``.json`` into ``--out`` (a free
name is chosen; nothing is overwritten unless ``--overwrite``). ``summary.csv`` lists every file with
its prediction, channel and status.

Exit codes: 0 all images exported, 1 some failed (each reported in one line on stderr),
2 usage error (bad option, unreadable checkpoint, unknown layer, no images, an output folder that
cannot be written: checked before any work), 130 interrupted (Ctrl-C: the summary of what was done
is written; ``--skip-existing`` continues). Two exports into one folder never overwrite each other:
every file is published with an exclusive create.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .core.inspect.method_names import HEATMAP_METHODS
from .core.render import COLORMAPS
from .batch_files import _no_images_message, already_exported, collect_images, write_summary  # noqa: F401
from .core.atomic import check_writable_dir, remove_stale_temps

METHODS = HEATMAP_METHODS  # the one list (core.method_names)
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
    from .core.imaging.pipeline import SEGMENTATION_METHODS

    p = argparse.ArgumentParser(
        prog="cxr-studio export",
        description="Export heatmap overlays (PNG + raw map .npy + JSON sidecar) for images or folders, "
        "without opening a window.",
        epilog="Exit codes: 0 all exported, 1 some images failed, 2 usage error, 130 interrupted.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and/or folders of images")
    p.add_argument("--checkpoint", default=None,
                   help="trained checkpoint (.pt) to explain (default: the shipped model for radiographs, "
                        "when exactly one ships)")
    from .core.models.args import add_model_arguments

    add_model_arguments(p)  # --arch, --classes, --input-size, --preset, --multi-label
    p.add_argument("--out", required=True, help="output folder (created when missing)")
    p.add_argument("--layer", default=None, help="layer name (default: the model's deepest conv layer)")
    p.add_argument("--channel", type=_channel, default="strongest", help="channel number or 'strongest' (default)")
    p.add_argument("--method", choices=METHODS, default="activation", help="heatmap source (default: activation)")
    p.add_argument("--class-index", type=int, default=None, help="class explained by Grad-CAM (default: predicted)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME|INDEX",
                   help="class explained by Grad-CAM, by name or index (default: the most probable)")
    p.add_argument("--threshold", type=_unit, default=0.0, help="map values below this are transparent (0..1)")
    p.add_argument("--opacity", type=_unit, default=0.5, help="overlay opacity (0..1, default 0.5)")
    p.add_argument("--colormap", choices=COLORMAPS, default="jet", help="colormap (default: jet, as the paper)")
    p.add_argument("--scale", choices=("channel", "layer"), default="channel", help="map scaling (default: channel)")
    p.add_argument("--ranking", choices=RANKINGS, default="max", help="how 'strongest' is chosen (default: max)")
    p.add_argument("--segmentation", choices=SEGMENTATION_METHODS, default=None,
                   help="lung segmentation method (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--overwrite", action="store_true", help="overwrite existing exports of the same name")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip images this checkpoint has already exported into --out (to continue an interrupted run)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return p


def _device(pref: str | None) -> Any:
    try:
        from .core.runtime.engine import choose_device
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


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """Load the checkpoint, resolve the spec and the layer; every failure is a UsageError."""
    from .core.models.importers import model_options, open_model
    from .core.models.layers import deepest_conv, resolve_layer

    device = _device(args.device)
    published = bool(args.arch and args.arch.startswith("xrv:") and args.checkpoint is None)
    if args.checkpoint is None and not published:
        from .core.models.shipped import default_model_for_radiographs, no_default_message

        default = default_model_for_radiographs()
        if default is None:
            raise UsageError(no_default_message())
        args.checkpoint = str(default)
    if not published and not Path(args.checkpoint).is_file():
        raise UsageError(f"Checkpoint {args.checkpoint} does not exist.")
    try:
        loaded = open_model(args.checkpoint, device=device, **model_options(args))
    except (ValueError, OSError, RuntimeError) as e:
        raise UsageError(f"Cannot load checkpoint {args.checkpoint or args.arch}: {e}") from None
    for warning in loaded.warnings:
        print(f"cxr-studio export: note: {warning}", file=sys.stderr)
    spec = loaded.spec
    if args.segmentation:
        spec = spec.replace(segmentation=args.segmentation)
    try:
        layer = args.layer or deepest_conv(loaded.model)
        resolve_layer(loaded.model, layer)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from .core.inspect.views import module_channels

    if module_channels(loaded.model, layer) is None:
        raise UsageError(f"Layer {layer!r} has no spatial channels (fully connected); pick a conv, ReLU or pool layer.")
    if args.ranking == "lungs" and spec.segmentation == "none" and args.channel == "strongest" \
            and args.method == "activation":
        raise UsageError("--ranking lungs needs a lung mask, but segmentation is 'none'; pass --segmentation.")
    n_cls = len(loaded.class_names)
    if args.class_name is not None:  # --class NAME or INDEX
        names = [str(c) for c in loaded.class_names]
        if args.class_name in names:
            args.class_index = names.index(args.class_name)
        elif args.class_name.isdigit():
            args.class_index = int(args.class_name)
        else:
            raise UsageError(f"--class {args.class_name!r} is not a class of this model ({', '.join(names[:20])}).")
    if args.class_index is not None and not 0 <= args.class_index < n_cls:
        raise UsageError(f"--class-index {args.class_index} is out of range: the model has {n_cls} classes.")
    return loaded, spec, layer


def export_one(
    path: Path, loaded: Any, spec: Any, layer: str, args: argparse.Namespace, taken: set[str] | None = None
) -> dict[str, Any]:
    """Export one image; returns its summary row. Raises on any failure (caught by the caller).

    ``taken``: stems already written in this run (two inputs called ``a.png`` never share a name,
    even with ``--overwrite``)."""
    from .core.render.export import ExportError, ExportExists, export_view, unique_stem
    from .core.imaging.io import read_image
    from .core.imaging.pipeline import preprocess
    from .core.inspect.views import compute_forward, compute_heatmap

    radiograph = read_image(path)
    pre = preprocess(radiograph, spec)
    forward = compute_forward(loaded, pre, [layer])
    probs = [float(p) for p in forward.probabilities]
    if not all(math.isfinite(p) for p in probs):
        raise ValueError("the model's output is not a finite number (NaN or infinity): the checkpoint's "
                         "weights are probably damaged or come from a run that diverged.")
    hm = compute_heatmap(
        loaded, pre, forward, layer, channel=args.channel, method=args.method,
        class_index=args.class_index, scale=args.scale, ranking=args.ranking,
    )
    out = Path(args.out)
    taken = set() if taken is None else taken
    settings = {
        "image_path": str(path),
        "checkpoint_path": str(loaded.path) if getattr(loaded, "path", None) else args.checkpoint,
        "checkpoint_sha256": getattr(loaded, "sha256", None),
        "arch": loaded.arch,
        "class_names": list(loaded.class_names),
        "probabilities": probs,
        "multi_label": bool(getattr(loaded, "multi_label", False)),
        **hm.settings(),
        "class_name": None if hm.class_index is None else str(loaded.class_names[hm.class_index]),
        "threshold": args.threshold,
        "opacity": args.opacity,
        "colormap": args.colormap,
        "spec": spec.to_dict(),
        "geometry": pre.geometry.to_dict(),
        "segmentation_used": pre.segmentation_method,
        "warnings": list(radiograph.meta.get("warnings", [])) + list(pre.warnings),
    }
    for warning in radiograph.meta.get("warnings", []):
        from tqdm import tqdm

        tqdm.write(f"{path}: warning: {warning}", file=sys.stderr)
    for attempt in range(1000):  # another process may take a free name first: then the next one
        stem, i = None, 0
        while stem is None or stem.name in taken:  # --overwrite: deterministic names; else free ones
            name = path.stem if i == 0 else f"{path.stem}_{i}"
            stem = out / name if args.overwrite else unique_stem(out, name)
            i += 1
        try:
            res = export_view(stem, radiograph.pixels, hm.map_original, settings, overwrite=args.overwrite)
            break
        except ExportExists:
            if args.overwrite:
                raise
            taken.add(stem.name)
        except OSError as e:  # disk full, a folder made read-only meanwhile: one sentence
            raise ValueError(f"cannot write its export into {out}: {e.strerror or e}.") from e
    else:
        raise ExportError(f"Could not find a free file name for {path.stem!r} in {out}.")
    taken.add(stem.name)
    row: dict[str, Any] = {"file": str(path), "status": "ok", "output": res.png.name, "error": ""}
    row.update({f"p_{name}": f"{p:.6f}" for name, p in zip(loaded.class_names, probs)})
    row["predicted"] = loaded.class_names[int(max(range(len(probs)), key=probs.__getitem__))] if probs else ""
    row["layer"] = layer
    row["channel"] = "" if hm.channel is None else hm.channel
    return row


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if isinstance(e, ValueError) else f"{type(e).__name__}: {msg}"


def _check_out(out: Path) -> None:
    """Prove, before any work, that the output folder can be written (without creating it yet)."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the nearest existing folder must let us create ``out``
    try:
        check_writable_dir(probe, "the output folder" if probe == out else f"the folder above {out}")
    except ValueError as e:
        raise UsageError(str(e)) from None


def main(
    argv: Sequence[str] | None = None,
    *,
    cancel: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> int:
    """Run the batch exporter; returns the exit code (0 ok, 1 some failed or cancelled, 2 usage error,
    130 interrupted by Ctrl-C: the summary of what was done is written first).

    ``cancel`` (a ``threading.Event``) is checked between images: the rest are marked "cancelled" in
    the summary. ``progress(fraction, message)`` is called after each image. Both match the engine
    Worker's ``cancellable=True`` keyword arguments, so the GUI can run this in its worker.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    from .core.imaging.io import ImageReadError

    out = Path(args.out)
    skipped: list[tuple[Path, str]] = []
    try:
        _check_out(out)
        loaded, spec, layer = _prepare(args)
        try:
            images = collect_images(args.inputs, skipped)
        except ImageReadError as e:
            raise UsageError(str(e)) from None
        if not images and not skipped:
            raise UsageError(_no_images_message(args.inputs))
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"Cannot create the output folder {out}: {e.strerror}.") from None
        remove_stale_temps(out)  # what an export killed mid-write (SIGKILL) left behind
    except UsageError as e:
        print(f"cxr-studio export: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxr-studio export: interrupted before any image was exported.", file=sys.stderr)
        return 130

    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    for p, why in skipped:
        print(f"{p}: skipped: it is {why}.", file=sys.stderr)
        rows.append({"file": str(p), "status": "skipped", "error": f"skipped: {why}"})
    taken: set[str] = set()
    failed = done = 0
    interrupted = False
    bar = tqdm(images, desc="Exporting", unit="image", file=sys.stderr, disable=args.no_progress)
    try:
        for i, path in enumerate(bar):
            if cancel is not None and cancel.is_set():
                rows.extend({"file": str(p), "status": "cancelled", "error": "cancelled"} for p in images[i:])
                failed += len(images) - i
                break
            if progress is not None:
                progress(i / len(images), f"Exporting {path.name} ({i + 1}/{len(images)})")
            earlier = already_exported(path, out, getattr(loaded, "sha256", None)) if args.skip_existing else None
            if earlier:
                rows.append({"file": str(path), "status": "done earlier", "output": earlier, "error": ""})
                done += 1
                continue
            try:
                rows.append(export_one(path, loaded, spec, layer, args, taken))
                done += 1
            except Exception as e:  # noqa: BLE001 - one bad image must not stop the batch
                failed += 1
                msg = _one_line(e)
                tqdm.write(f"{path}: {msg}", file=sys.stderr)
                rows.append({"file": str(path), "status": "failed", "error": msg})
    except KeyboardInterrupt:  # the image being exported left nothing (export_view cleans up)
        interrupted = True
        listed = {r["file"] for r in rows}
        rows.extend({"file": str(p), "status": "interrupted", "error": "interrupted"}
                    for p in images if str(p) not in listed)
    finally:
        bar.close()
    if progress is not None:
        progress(1.0, "Export finished")
    try:
        summary: Any = write_summary(out, rows, loaded.class_names, overwrite=args.overwrite)
    except OSError as e:
        print(f"cxr-studio export: error: the summary could not be written into {out}: {e.strerror or e}.",
              file=sys.stderr)
        summary = "not written"
    if interrupted:
        print(f"Interrupted: {done} of {len(images)} image(s) exported to {args.out}, {failed} failed. "
              f"Summary: {summary}. To continue, run the same command again with --skip-existing: the images "
              "already exported are skipped.", file=sys.stderr)
        return 130
    print(f"Exported {done} of {len(images)} image(s) to {args.out}; {failed} failed. Summary: {summary}")
    return 0 if failed == 0 and summary != "not written" else 1


if __name__ == "__main__":
    sys.exit(main())
