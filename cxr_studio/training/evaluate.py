"""``eval``: a checkpoint on data roots (a split's test part, or every image) -> metrics JSON + ROC PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import DatasetError, PreprocessCache, read_split, scan_roots, select, write_json_atomic
from .loops import predict
from .metrics import classification_metrics, roc_curve
from .plots import roc_png
from .tensors import CachedImages


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
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on the chosen images. Without ``split_file`` or ``use_all`` the
    ``split.json`` beside the checkpoint (its run folder) is used when present, else every image."""
    from ..core.checkpoint import load_checkpoint
    from .engine import pick_device

    ckpt_path = Path(checkpoint)
    ck = load_checkpoint(ckpt_path, device=pick_device(device))
    samples = scan_roots(list(roots))
    if split_file is None and not use_all and (ckpt_path.parent / "split.json").exists():
        split_file = ckpt_path.parent / "split.json"
    if use_all or split_file is None:
        chosen, source = samples, "all"
    else:
        chosen, source = select(samples, read_split(split_file, samples)[part]), f"{split_file}:{part}"
    if not chosen:
        raise DatasetError("no images to evaluate")
    recipe = (ck.provenance or {}).get("recipe", {}) if isinstance(ck.provenance, dict) else {}
    use_masks = bool(recipe.get("use_dataset_masks", True))
    folder = Path(cache_dir) if cache_dir else (ckpt_path.resolve().parent.parent / ".cache")
    spec = ck.spec
    cache = PreprocessCache(folder, spec, int(spec.input_size), use_masks, preprocess_fn)
    ds = CachedImages(cache.load_all(chosen), [s.label for s in chosen], spec)
    dev = next(ck.model.parameters()).device
    labels, probs, loss = predict(ck.model, ds, dev)
    m = classification_metrics(labels, probs)
    m.update(loss=loss, images=source, checkpoint=str(ckpt_path), checkpoint_sha256=getattr(ck, "sha256", ""))
    fpr, tpr, _ = roc_curve(labels, probs)
    m["roc"] = {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}
    if roc_out is None:
        roc_out = Path(json_out).with_suffix(".roc.png") if json_out else ckpt_path.with_suffix(".roc.png")
    roc_png(fpr, tpr, m["auc"], roc_out)
    m["roc_png"] = str(roc_out)
    if json_out:
        write_json_atomic(Path(json_out), m)
    return m
