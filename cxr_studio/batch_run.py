"""The folder export itself: `run(images, options, progress=None, cancel=None) -> BatchResult`.

`cxr-studio export` (batch.main) parses its command line into `ExportOptions` and calls `run`; the
app's "Export folder…" calls `run` in its worker (``cancellable=True``: the worker passes ``cancel``
and ``progress``). `export_one` writes one image's PNG + NPY + JSON (sidecar from
``core.render.sidecar``) and returns its summary.csv row.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .batch_files import _no_images_message, already_exported, collect_images, write_summary
from .batch_options import STRONGEST, ExportOptions, UsageError
from .core.atomic import check_writable_dir, remove_stale_temps


@dataclass
class BatchResult:
    """What a folder export did. ``total``: the images found (entries passed over are in ``skipped``);
    ``exported``: written now or by an earlier run (``skip_existing``); ``failures``: (file, one
    sentence) per image that failed; ``cancelled``: images left out after ``cancel`` was set;
    ``interrupted``: Ctrl-C stopped it (the summary was still written). ``summary``: the summary.csv
    written (None when it could not be: ``summary_error`` says why); ``rows``: its rows."""

    total: int
    options: ExportOptions
    exported: int = 0
    cancelled: int = 0
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: Path | None = None
    summary_error: str | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def exit_code(self) -> int:
        """The command line's: 0 all exported, 1 some failed or cancelled (or no summary), 130 Ctrl-C."""
        if self.interrupted:
            return 130
        return 0 if not self.failures and not self.cancelled and self.summary is not None else 1


def _say(message: str) -> None:
    """One line on stderr that does not break tqdm's bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _device(pref: str | None) -> Any:
    from .core.runtime.engine import choose_device

    try:
        return choose_device(pref)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _prepare(options: ExportOptions) -> tuple[Any, Any, str, ExportOptions]:
    """Open the model, resolve the spec, the layer and the class; returns (loaded, spec, layer,
    options with ``checkpoint`` and ``class_index`` filled in). Every failure is a UsageError."""
    from .core.inspect.views import module_channels
    from .core.models.layers import deepest_conv, resolve_layer

    loaded, checkpoint = options.loaded, options.checkpoint
    if loaded is None:
        from .core.models.importers import open_model

        device = _device(options.device)
        published = bool(options.arch and options.arch.startswith("xrv:") and checkpoint is None)
        if checkpoint is None and not published:
            from .core.models.shipped import default_model_for_radiographs, no_default_message

            default = default_model_for_radiographs()
            if default is None:
                raise UsageError(no_default_message())
            checkpoint = str(default)
        if not published and not Path(checkpoint).is_file():
            raise UsageError(f"Checkpoint {checkpoint} does not exist.")
        try:
            loaded = open_model(checkpoint, device=device, **options.model_options())
        except (ValueError, OSError, RuntimeError) as e:
            raise UsageError(f"Cannot load checkpoint {checkpoint or options.arch}: {e}") from None
        for warning in getattr(loaded, "warnings", ()):
            print(f"cxr-studio export: note: {warning}", file=sys.stderr)
    elif checkpoint is None and getattr(loaded, "path", None):
        checkpoint = str(loaded.path)
    spec = loaded.spec
    if options.segmentation:
        spec = spec.replace(segmentation=options.segmentation)
    try:
        layer = options.layer or deepest_conv(loaded.model)
        resolve_layer(loaded.model, layer)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if module_channels(loaded.model, layer) is None:
        raise UsageError(f"Layer {layer!r} has no spatial channels (fully connected); pick a conv, ReLU or pool layer.")
    if options.ranking == "lungs" and spec.segmentation == "none" and options.channel == STRONGEST \
            and options.method == "activation":
        raise UsageError("--ranking lungs needs a lung mask, but segmentation is 'none'; pass --segmentation.")
    n_cls = len(loaded.class_names)
    class_index = options.class_index
    if options.class_name is not None:  # --class NAME or INDEX
        names = [str(c) for c in loaded.class_names]
        if options.class_name in names:
            class_index = names.index(options.class_name)
        elif options.class_name.isdigit():
            class_index = int(options.class_name)
        else:
            raise UsageError(f"--class {options.class_name!r} is not a class of this model ({', '.join(names[:20])}).")
    if class_index is not None and not 0 <= class_index < n_cls:
        raise UsageError(f"--class-index {class_index} is out of range: the model has {n_cls} classes.")
    resolved = dataclasses.replace(options, loaded=loaded, checkpoint=checkpoint, class_index=class_index)
    return loaded, spec, layer, resolved


def _lesion_scores(path: Path, radiograph: Any, map_original: Any, threshold: float) -> dict[str, Any] | None:
    """The map against the lesion outline beside ``path`` (either layout), as the app's Heatmap dock
    scores it; None when there is none. An unreadable outline becomes a warning, not a failure."""
    from .core.imaging.lesions import LesionError, find_lesion_mask
    from .core.inspect.lesion_scores import lesion_scores

    try:
        mask, source = find_lesion_mask(path, radiograph.shape)
    except (LesionError, OSError, ValueError) as e:
        radiograph.meta.setdefault("warnings", []).append(f"lesion outline not read: {e}")
        return None
    if mask is None or not mask.any():
        return None
    return lesion_scores(map_original, mask, threshold, source=source)


def export_one(
    path: Path, loaded: Any, spec: Any, layer: str, options: Any, taken: set[str] | None = None
) -> dict[str, Any]:
    """Export one image; returns its summary row. Raises on any failure (caught by the caller).

    ``options``: `ExportOptions` (or the parsed command line: the same attribute names).
    ``taken``: stems already written in this run (two inputs called ``a.png`` never share a name,
    even with ``overwrite``)."""
    from .core.imaging.io import read_image
    from .core.pipeline import preprocess
    from .core.models.shipped import operating_threshold, predicted_class
    from .core.inspect.views import compute_forward, compute_heatmap
    from .core.render.export import ExportError, ExportExists, export_view, unique_stem
    from .core.render.sidecar import sidecar_settings

    radiograph = read_image(path)
    pre = preprocess(radiograph, spec)
    forward = compute_forward(loaded, pre, [layer])
    probs = [float(p) for p in forward.probabilities]
    if not all(math.isfinite(p) for p in probs):
        raise ValueError("the model's output is not a finite number (NaN or infinity): the checkpoint's "
                         "weights are probably damaged or come from a run that diverged.")
    hm = compute_heatmap(
        loaded, pre, forward, layer, channel=options.channel, method=options.method,
        class_index=options.class_index, scale=options.scale, ranking=options.ranking,
    )
    out = Path(options.out)
    taken = set() if taken is None else taken
    scores = _lesion_scores(path, radiograph, hm.map_original, options.threshold)
    settings = sidecar_settings(
        loaded=loaded, radiograph=radiograph, preprocessed=pre, spec=spec, probabilities=probs,
        layer=hm.layer, channel=hm.channel, method=hm.method, class_index=hm.class_index, scale=hm.scale,
        ranking=hm.ranking_method, threshold=options.threshold, opacity=options.opacity,
        colormap=options.colormap, image_path=str(path), checkpoint_path=options.checkpoint, lesion_scores=scores,
        valid=hm.valid,
    )
    for warning in radiograph.meta.get("warnings", []):
        _say(f"{path}: warning: {warning}")
    for attempt in range(1000):  # another process may take a free name first: then the next one
        stem, i = None, 0
        while stem is None or stem.name in taken:  # overwrite: deterministic names; else free ones
            name = path.stem if i == 0 else f"{path.stem}_{i}"
            stem = out / name if options.overwrite else unique_stem(out, name)
            i += 1
        try:
            res = export_view(stem, radiograph.pixels, hm.map_original, settings, overwrite=options.overwrite)
            break
        except ExportExists:
            if options.overwrite:
                raise
            taken.add(stem.name)
        except OSError as e:  # disk full, a folder made read-only meanwhile: one sentence
            raise ValueError(f"cannot write its export into {out}: {e.strerror or e}.") from e
    else:
        raise ExportError(f"Could not find a free file name for {path.stem!r} in {out}.")
    taken.add(stem.name)
    row: dict[str, Any] = {"file": str(path), "status": "ok", "output": res.png.name, "error": ""}
    row.update({f"p_{name}": f"{p:.6f}" for name, p in zip(loaded.class_names, probs)})
    two_class = len(probs) == 2 and not getattr(loaded, "multi_label", False)  # a softmax pair reads its threshold
    threshold = operating_threshold(getattr(loaded, "provenance", None)) if two_class else None
    k = predicted_class(probs, threshold)
    row["predicted"] = "" if k is None else loaded.class_names[k]
    row["operating_point"] = "" if threshold is None else f"{threshold:.4f}"
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


def _start(inputs: Sequence[str | Path], options: ExportOptions) -> tuple[Any, Any, str, ExportOptions, list, list]:
    """Everything checked before the first image: raises `UsageError`."""
    from .core.imaging.io import ImageReadError

    options.check()
    out = Path(options.out)
    _check_out(out)
    loaded, spec, layer, options = _prepare(options)
    skipped: list[tuple[Path, str]] = []
    names = [str(i) for i in inputs]
    try:
        images = collect_images(names, skipped)
    except ImageReadError as e:
        raise UsageError(str(e)) from None
    if not images and not skipped:
        raise UsageError(_no_images_message(names))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"Cannot create the output folder {out}: {e.strerror}.") from None
    remove_stale_temps(out)  # what an export killed mid-write (SIGKILL) left behind
    return loaded, spec, layer, options, images, skipped


def run(
    images: Sequence[str | Path],
    options: ExportOptions,
    progress: Callable[[float, str], None] | None = None,
    cancel: Any = None,
) -> BatchResult:
    """Export every image (files as given, and the images directly inside folders) into
    ``options.out``, then write summary.csv (also after a cancel or Ctrl-C); returns what was done.

    ``progress(fraction, message)`` is called once per image before it starts (fraction = images
    finished / total, message ``"Exporting NAME (i/n)"``) and once at the end (1.0). ``cancel`` (a
    ``threading.Event``) is checked before each image: the image being exported finishes, the rest
    are listed as "cancelled". Both match the engine Worker's ``cancellable=True`` keyword arguments.
    A problem that stops the whole run (bad option or model, no images, an output folder that cannot
    be written) raises `UsageError` before any image is touched; one bad image is one failure."""
    loaded, spec, layer, options, found, skipped = _start(images, options)
    from tqdm import tqdm

    out = Path(options.out)
    result = BatchResult(total=len(found), options=options)
    rows = result.rows
    for p, why in skipped:
        print(f"{p}: skipped: it is {why}.", file=sys.stderr)
        result.skipped.append((str(p), why))
        rows.append({"file": str(p), "status": "skipped", "error": f"skipped: {why}"})
    taken: set[str] = set()
    sha = getattr(loaded, "sha256", None)
    bar = tqdm(found, desc="Exporting", unit="image", file=sys.stderr, disable=not options.progress_bar)
    try:
        for i, path in enumerate(bar):
            if cancel is not None and cancel.is_set():
                rows.extend({"file": str(p), "status": "cancelled", "error": "cancelled"} for p in found[i:])
                result.cancelled = len(found) - i
                break
            if progress is not None:
                progress(i / len(found), f"Exporting {path.name} ({i + 1}/{len(found)})")
            earlier = already_exported(path, out, sha) if options.skip_existing else None
            if earlier:
                rows.append({"file": str(path), "status": "done earlier", "output": earlier, "error": ""})
                result.exported += 1
                continue
            try:
                rows.append(export_one(path, loaded, spec, layer, options, taken))
                result.exported += 1
            except Exception as e:  # noqa: BLE001 - one bad image must not stop the batch
                msg = _one_line(e)
                _say(f"{path}: {msg}")
                result.failures.append((str(path), msg))
                rows.append({"file": str(path), "status": "failed", "error": msg})
    except KeyboardInterrupt:  # the image being exported left nothing (export_view cleans up)
        result.interrupted = True
        listed = {r["file"] for r in rows}
        rows.extend({"file": str(p), "status": "interrupted", "error": "interrupted"}
                    for p in found if str(p) not in listed)
    finally:
        bar.close()
    if progress is not None:
        progress(1.0, "Export finished")
    try:
        result.summary = write_summary(out, rows, loaded.class_names, overwrite=options.overwrite)
    except OSError as e:
        result.summary_error = f"the summary could not be written into {out}: {e.strerror or e}."
    return result
