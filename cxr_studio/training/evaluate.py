"""``eval``: a checkpoint on data roots (a split's test part, or every image) -> metrics JSON + ROC PNG."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data import DatasetError, PreprocessCache, read_split, scan_roots, select, write_json_atomic
from .loops import predict
from .metrics import classification_metrics, roc_curve, youden_threshold
from .plots import roc_png
from .tensors import CachedImages
from ..core.atomic import check_writable_file
from .fit import pick_device
from ..core.models.importers import open_model  # any model file the user names (--arch, TorchScript...)


def parse_threshold(value: float | str) -> float | str:
    """A decision threshold strictly between 0 and 1, or ``"val"``; DatasetError otherwise."""
    if value == "val":
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not 0.0 < v < 1.0:
        raise DatasetError(f"the threshold must be a number between 0 and 1 or 'val', got {value!r}")
    return v


def evaluation_cache(ck: Any, ckpt_path: Path, cache_dir: str | Path | None = None,
                     preprocess_fn: Any = None) -> PreprocessCache:
    """The preprocessing cache a checkpoint is evaluated through: its own spec at its input size (the
    whole image resized, as the app does), the dataset's lung masks when its recipe used them, kept in
    ``<run>/../.cache`` unless ``cache_dir`` says otherwise."""
    recipe = (ck.provenance.get("recipe") or {}) if isinstance(ck.provenance, dict) else {}
    recipe = recipe if isinstance(recipe, dict) else {}  # a checkpoint saved without a recipe
    folder = Path(cache_dir) if cache_dir else (Path(ckpt_path).resolve().parent.parent / ".cache")
    return PreprocessCache(folder, ck.spec, int(ck.spec.input_size), bool(recipe.get("use_dataset_masks", True)),
                           preprocess_fn)


def checkpoint_probabilities(ck: Any, cache: PreprocessCache, samples: list) -> tuple:
    """(labels, probability of class 1, mean cross-entropy) of ``samples`` in order, through ``cache``."""
    dev = next(ck.model.parameters()).device
    return predict(ck.model, CachedImages(cache.load_all(samples), [s.label for s in samples], ck.spec), dev)


def evaluate_checkpoint(
    checkpoint: str | Path,
    roots: list[str | Path],
    *,
    split_file: str | Path | None = None,
    use_all: bool = False,
    part: str = "test",
    json_out: str | Path | None = None,
    roc_out: str | Path | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    preprocess_fn: Any = None,
    threshold: float | str = 0.5,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    model_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on the chosen images. Without ``split_file`` or ``use_all`` the
    ``split.json`` beside the checkpoint (its run folder) is used when present, else every image.

    ``threshold``: the probability of "abnormal" at or above which an image is called abnormal
    (accuracy, sensitivity, specificity, confusion matrix; the AUC does not depend on it), or
    ``"val"``: the threshold that maximises Youden's J on the split's validation part, chosen there
    and then applied unchanged to the evaluated images.

    Output paths are checked before anything is computed; ``on_metrics(m)`` is called (the CLI prints
    them) before any file is written, so a failing write never loses the metrics. Without ``roc_out``
    the ROC picture goes beside ``json_out``, else beside the checkpoint, and is skipped with a note
    (``m["notes"]``) when that folder cannot be written."""
    ckpt_path = Path(checkpoint)
    notes: list[str] = []
    try:
        for path, what in ((json_out, "the metrics (--json)"), (roc_out, "the ROC picture (--roc)")):
            if path:
                check_writable_file(path, what)
    except ValueError as e:
        raise DatasetError(str(e)) from None
    if roc_out is None:
        roc_out = Path(json_out).with_suffix(".roc.png") if json_out else ckpt_path.with_suffix(".roc.png")
        if not json_out:
            try:
                check_writable_file(roc_out, "the ROC picture")
            except ValueError as e:
                notes.append(f"The ROC picture was not written ({e}); pass --roc PATH to choose where.")
                roc_out = None
    ck = open_model(ckpt_path, device=pick_device(device),
                    **{k: v for k, v in (model_options or {}).items() if v is not None})
    samples = scan_roots(list(roots))
    if split_file is None and not use_all and (ckpt_path.parent / "split.json").exists():
        split_file = ckpt_path.parent / "split.json"
    split = None if (use_all or split_file is None) else read_split(split_file, samples)
    if split is None:
        chosen, source = samples, "all"
    else:
        chosen, source = select(samples, split[part]), f"{split_file}:{part}"
    if not chosen:
        raise DatasetError("no images to evaluate")
    threshold = parse_threshold(threshold)
    if threshold == "val" and (split is None or not split.get("val")):
        raise DatasetError("--threshold val needs a split file with a validation part (not --all)")
    cache = evaluation_cache(ck, ckpt_path, cache_dir, preprocess_fn)

    def probabilities(images: list) -> tuple:
        return checkpoint_probabilities(ck, cache, images)

    source_of_threshold = "given"
    if threshold == "val":
        val_labels, val_probs, _ = probabilities(select(samples, split["val"]))
        check_finite_outputs(val_probs, "the validation images")
        threshold, source_of_threshold = youden_threshold(val_labels, val_probs), f"{split_file}:val (Youden)"
        if math.isnan(threshold):  # one class only
            raise DatasetError("the validation part holds one class only; cannot choose a threshold on it")
    labels, probs, loss = probabilities(chosen)
    check_finite_outputs(probs, "the evaluated images")
    m = classification_metrics(labels, probs, threshold=float(threshold))
    m["threshold_source"] = source_of_threshold
    m.update(loss=loss, images=source, checkpoint=str(ckpt_path), checkpoint_sha256=getattr(ck, "sha256", ""))
    if len(set(int(v) for v in labels)) < 2:
        have = "abnormal" if int(labels[0]) else "normal"
        notes.append(f"The AUC, and the sensitivity or specificity, are undefined (null): all {len(labels)} "
                     f"evaluated images are '{have}'.")
    fpr, tpr, _ = roc_curve(labels, probs)
    m["roc"] = {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}
    m["roc_png"] = str(roc_out) if roc_out is not None else None
    m["notes"] = notes
    if on_metrics is not None:
        on_metrics(m)
    try:
        if roc_out is not None:
            roc_png(fpr, tpr, m["auc"], roc_out)
        if json_out:
            write_json_atomic(Path(json_out), m)
    except OSError as e:
        raise DatasetError(f"the metrics were computed but could not be written ({e.filename or ''}: "
                           f"{e.strerror or e})") from None
    return m


def check_finite_outputs(probs: Any, where: str) -> None:
    """Refuse NaN or infinite model outputs by name (a diverged or damaged checkpoint), instead of
    metrics that are NaN."""
    bad = int((~np.isfinite(np.asarray(probs, dtype=np.float64))).sum())
    if bad:
        raise DatasetError(
            f"the model's output is not a finite number (NaN or infinity) for {bad} of {len(probs)} of "
            f"{where}: the checkpoint's weights are probably damaged or come from a run that diverged")
