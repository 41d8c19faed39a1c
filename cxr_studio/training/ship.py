"""``cxr-studio-train ship``: turn a trained run into a self-describing model the app can ship.

From a run's checkpoint and its ``split.json`` it
1. scores the validation images and chooses the operating threshold there (Youden's J),
2. scores the held-out test images once, with that threshold unchanged: AUC with a 95 % bootstrap
   interval (positives and negatives resampled separately), sensitivity, specificity and accuracy,
   pooled and per dataset (the first component of a sample id: ``MontgomerySet``, ``ChinaSet_AllFiles``),
3. writes a release checkpoint (no optimizer state) whose provenance carries the split, the epochs, the
   operating point, the test metrics and a ``release`` block (title, kind, what it was trained on), with
   the class names it should be shown with, and checks that it loads with ``weights_only=True``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.atomic import atomic_file
from ..core.models.checkpoint import CheckpointError, load_checkpoint, read_raw
from ..core.hashing import file_sha256
from .cli import subcommand
from .data import DatasetError, read_split, scan_roots, select, write_json_atomic
from .evaluate import check_finite_outputs, checkpoint_probabilities, evaluation_cache
from .metrics import auc_interval, classification_metrics, youden_threshold

MAX_SHIPPED_BYTES = 20 * 1000 * 1000  # the repository's hook refuses bigger files


def dataset_of(sample_id: str) -> str:
    return sample_id.split("/", 1)[0]


def metrics_with_interval(labels: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int) -> dict:
    m = classification_metrics(labels, probs, threshold=threshold)
    lo, hi = auc_interval(labels, probs, n_boot=n_boot)
    m["auc_ci95"] = [lo, hi]
    m["n_abnormal"] = int(np.sum(labels == 1))
    m["n_normal"] = int(np.sum(labels == 0))
    return m


def held_out_report(ids: list[str], labels: np.ndarray, probs: np.ndarray, threshold: float,
                    n_boot: int = 2000) -> dict[str, dict]:
    """Metrics pooled and per dataset, at one fixed threshold."""
    out = {"pooled": metrics_with_interval(labels, probs, threshold, n_boot)}
    names = np.array([dataset_of(i) for i in ids])
    for name in sorted(set(names.tolist())):
        keep = names == name
        out[str(name)] = metrics_with_interval(labels[keep], probs[keep], threshold, n_boot)
    return out


def markdown_table(report: dict[str, dict]) -> str:
    rows = ["| images | n (TB / normal) | AUC [95 % CI] | sensitivity | specificity | accuracy |",
            "|---|---|---|---|---|---|"]
    for name, m in report.items():
        lo, hi = m["auc_ci95"]
        rows.append(f"| {name} | {m['n']} ({m['n_abnormal']} / {m['n_normal']}) | {m['auc']:.3f} [{lo:.3f}, {hi:.3f}] "
                    f"| {m['sensitivity']:.2f} | {m['specificity']:.2f} | {m['accuracy']:.3f} |")
    return "\n".join(rows)


def ship(checkpoint: str | Path, roots: list[str | Path], out: str | Path, *, split_file: str | Path | None = None,
         title: str, trained_on: str, kind: str = "radiographs", class_names: list[str] | None = None,
         cache_dir: str | Path | None = None, n_boot: int = 2000, json_out: str | Path | None = None,
         max_bytes: int = MAX_SHIPPED_BYTES, note: Callable[[str], None] = print) -> dict[str, Any]:
    """Choose the operating point on validation, measure the test part, write the release file."""
    src, out = Path(checkpoint), Path(out)
    split_file = Path(split_file) if split_file else src.parent / "split.json"
    if not split_file.is_file():
        raise DatasetError(f"{split_file} does not exist: ship needs the run's split (--split-file)")
    ck = load_checkpoint(src, device="cpu")
    samples = scan_roots(list(roots))
    split = read_split(split_file, samples)
    if not split.get("val") or not split.get("test"):
        raise DatasetError(f"{split_file} needs a validation and a test part")
    cache = evaluation_cache(ck, src, cache_dir)  # the images exactly as `eval` and the app see them
    val, test = select(samples, split["val"]), select(samples, split["test"])
    val_labels, val_probs, _ = checkpoint_probabilities(ck, cache, val)
    check_finite_outputs(val_probs, "the validation images")
    threshold = youden_threshold(val_labels, val_probs)
    if not np.isfinite(threshold):
        raise DatasetError("the validation part holds one class only; cannot choose an operating threshold")
    test_labels, test_probs, _ = checkpoint_probabilities(ck, cache, test)
    check_finite_outputs(test_probs, "the test images")
    report = held_out_report([s.id for s in test], test_labels, test_probs, float(threshold), n_boot)
    val_report = metrics_with_interval(val_labels, val_probs, float(threshold), n_boot)

    obj = read_raw(src)
    obj.pop("training_state", None)
    names = list(class_names or obj.get("class_names") or [])
    if len(names) != len(obj.get("class_names") or names):
        raise CheckpointError(f"{len(names)} class names given for a model with {len(obj['class_names'])} outputs")
    obj["class_names"] = names
    prov = dict(obj.get("provenance") or {})
    prov.update(
        release={"title": title, "kind": kind, "trained_on": trained_on,
                 "released": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "released_from": src.name, "released_from_sha256": file_sha256(src)},
        epochs_trained=prov.get("epoch"),
        split={"file_sha256": file_sha256(split_file), **{k: list(split[k]) for k in ("train", "val", "test")}},
        operating_point={"threshold": float(threshold), "class": names[1] if len(names) > 1 else "1",
                         "chosen_on": f"validation part ({len(val)} images), Youden's J"},
        val_metrics=val_report,
        test_metrics=report,
    )
    prov = json.loads(json.dumps(prov))  # plain types only (a weights_only load refuses anything else)
    obj["provenance"] = prov
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "wb", fsync=True) as f:
        torch.save(obj, f)
    size = out.stat().st_size
    if size > max_bytes:
        out.unlink()
        raise CheckpointError(f"the release would be {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    load_checkpoint(out, device="cpu")  # the release must load (weights_only inside)
    result = {"out": str(out), "bytes": size, "threshold": float(threshold), "val": val_report, "test": report}
    if json_out:
        write_json_atomic(Path(json_out), result)
    note(f"operating threshold {threshold:.3f} (validation, Youden's J; {len(val)} images)")
    note(markdown_table(report))
    note(f"wrote {out} ({size / 1e6:.2f} MB)")
    return result


@subcommand("ship", "measure a run on its held-out test part and write a self-describing release model")
def _ship_setup(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    p.add_argument("--checkpoint", required=True, help="the run's checkpoint (best.pt or last.pt)")
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT")
    p.add_argument("--split-file", default=None, help="default: split.json beside the checkpoint")
    p.add_argument("--out", required=True, help="release file to write (e.g. resources/models/cxrnet-tb.pt)")
    p.add_argument("--title", required=True, help="short name shown in the app")
    p.add_argument("--trained-on", required=True, help="what it was trained on, in words")
    p.add_argument("--kind", default="radiographs", choices=["radiographs", "phantoms"])
    p.add_argument("--class-names", default=None, help="comma-separated, e.g. normal,tuberculosis")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the AUC interval")
    p.add_argument("--json", default=None, help="also write the measured numbers here")

    def run(a: argparse.Namespace) -> int:
        names = [c.strip() for c in a.class_names.split(",")] if a.class_names else None
        ship(a.checkpoint, a.data, a.out, split_file=a.split_file, title=a.title, trained_on=a.trained_on,
             kind=a.kind, class_names=names, cache_dir=a.cache_dir, n_boot=a.bootstrap, json_out=a.json)
        return 0

    return run
