"""Cohort scoring (no Qt; runs in the worker): every image of a folder or data root through the
current model, one at a time (memory does not grow with the number of images), with progress and
cancel, and the table's plain values (file, label, probability, prediction, correct).

Data roots are read as the trainer reads them (`training.data.scan_root`: NLM ``CXR_png`` with its
masks, class folders, a CSV with ``path,label``); any other folder is scored image by image, labelled
by the NLM ``_0`` / ``_1`` file-name suffix when it has one. Images are preprocessed as
``cxr-studio-train eval`` does (the dataset's own lung mask when the checkpoint's recipe used them),
so the AUC is the trainer's.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

COLUMNS = ("path", "label", "probability", "prediction", "correct", "lesion_hit")
TOLERANCE_PX = 8  # pointing-game tolerance in pixels of a 512-pixel image, as `cxr-studio-train localize`
FILTERS = ("all", "errors", "false negatives", "false positives", "true positives", "true negatives", "unlabelled")


@dataclass
class Item:
    path: Path
    label: int | None
    mask_paths: list[Path] = field(default_factory=list)


@dataclass
class CohortRow:
    path: str
    label: int | None
    probability: float  # NaN when the image could not be scored
    error: str = ""
    lesion_hit: bool | None = None  # the shown map's peak inside the lesion (None: no lesion mask)

    def prediction(self, threshold: float) -> int | None:
        """1 (abnormal) or 0 by the app's one rule (``predicted_class``); None when not scored."""
        from ..core.models.shipped import predicted_class  # the models package loads torch: not at import

        p = self.probability
        return None if np.isnan(p) else predicted_class((1.0 - p, p), threshold)

    def kind(self, threshold: float) -> str:
        """"true positive", "false negative"... ("unlabelled" / "failed" when it cannot say)."""
        pred = self.prediction(threshold)
        if pred is None:
            return "failed"
        if self.label is None:
            return "unlabelled"
        return f"{'true' if pred == self.label else 'false'} {'positive' if pred else 'negative'}"


@dataclass
class CohortResult:
    root: str
    rows: list[CohortRow]
    threshold: float
    cancelled: bool = False
    seen_names: frozenset[str] = frozenset()  # file names in the model's own training / validation split

    def seen(self) -> list[CohortRow]:
        """Rows the model trained or was selected on (by file name, from the split it carries)."""
        return [r for r in self.rows if Path(r.path).name in self.seen_names]

    def held_out(self) -> "CohortResult":
        """The same result without the model's own training and validation images."""
        return CohortResult(self.root, [r for r in self.rows if Path(r.path).name not in self.seen_names],
                            self.threshold, self.cancelled)

    def pointing(self) -> tuple[int, int]:
        """(hits, images with a lesion mask) of the pointing game."""
        scored = [r.lesion_hit for r in self.rows if r.lesion_hit is not None]
        return sum(scored), len(scored)

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        ok = [r for r in self.rows if r.label is not None and not np.isnan(r.probability)]
        return np.array([r.label for r in ok], int), np.array([r.probability for r in ok], np.float64)

    def auc(self) -> float:
        from cxr_studio.training.metrics import auc_score

        y, p = self.labelled()
        return auc_score(y, p) if len(y) else float("nan")

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        from cxr_studio.training.metrics import roc_curve

        y, p = self.labelled()
        fpr, tpr, _ = roc_curve(y, p)
        return fpr, tpr

    def confusion(self) -> dict[str, int]:
        out = {"true positive": 0, "false negative": 0, "false positive": 0, "true negative": 0}
        for r in self.rows:
            k = r.kind(self.threshold)
            if k in out:
                out[k] += 1
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS + ("error",))
        for r in self.rows:
            pred = r.prediction(self.threshold)
            w.writerow([r.path, "" if r.label is None else r.label,
                        "" if np.isnan(r.probability) else f"{r.probability:.6f}", "" if pred is None else pred,
                        "" if pred is None or r.label is None else int(pred == r.label),
                        "" if r.lesion_hit is None else int(r.lesion_hit), r.error])
        return buf.getvalue()


def matches(row: CohortRow, name: str, threshold: float) -> bool:
    """Whether a row passes one of `FILTERS`."""
    kind = row.kind(threshold)
    if name == "all":
        return True
    if name == "errors":
        return kind.startswith("false")
    return kind == name.rstrip("s")


def find_images(root: str | Path) -> list[Item]:
    """The images of a data root (labels and masks as the trainer reads them) or of any folder."""
    from cxr_studio.training.data import DatasetError, label_from_name, scan_root

    root = Path(root)
    try:
        return [Item(s.path, int(s.label), list(s.mask_paths)) for s in scan_root(root)]
    except DatasetError:
        if not root.is_dir():
            raise ValueError(f"{root} is neither a folder of radiographs nor a data root the trainer reads.") from None
    from cxr_studio.core.imaging.io import list_images

    items = [Item(p, label_from_name(p)) for p in list_images(root)]
    if not items:
        raise ValueError(f"No radiographs found in {root}.")
    return items


def _uses_masks(loaded: Any) -> bool:
    recipe = (getattr(loaded, "provenance", None) or {}).get("recipe") or {}
    return bool(recipe.get("use_dataset_masks", True)) if isinstance(recipe, dict) else True


def score_one(loaded: Any, item: Item, use_masks: bool) -> tuple[float, bool | None]:
    """The probability of the last class and, when the image has a lesion mask, whether the map the
    app shows first (the deepest conv layer's strongest channel) peaks inside it (pointing game)."""
    from cxr_studio.core.imaging.io import read_image
    from cxr_studio.core.imaging.lesions import find_lesion_mask
    from cxr_studio.core.pipeline import preprocess
    from cxr_studio.core.inspect.views import compute_forward, compute_heatmap, default_layer
    from cxr_studio.training.data import read_mask

    rad = read_image(item.path)
    mask = read_mask(item.mask_paths) if use_masks and item.mask_paths else None
    if mask is not None and mask.shape != rad.shape:
        import cv2

        mask = cv2.resize(mask.astype(np.uint8), (rad.shape[1], rad.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    prep = preprocess(rad, loaded.spec, lung_mask=mask)
    lesion = find_lesion_mask(item.path, rad.shape)[0] if item.label == 1 else None
    layer = default_layer(loaded.model) if lesion is not None and lesion.any() else None
    fwd = compute_forward(loaded, prep, names=[layer] if layer else [])
    hit = None
    if layer is not None:
        from cxr_studio.core.inspect.localisation import score_map

        hm = compute_heatmap(loaded, prep, fwd, layer, "strongest", "activation", ranking="max")
        hit = bool(score_map(hm.map_original, lesion, TOLERANCE_PX)["hit"])
    return float(fwd.probabilities[-1]), hit


def seen_by(loaded: Any) -> frozenset[str]:
    """File names of the training and validation images in a checkpoint's stored split (provenance)."""
    split = (getattr(loaded, "provenance", None) or {}).get("split")
    if not isinstance(split, dict):
        return frozenset()
    return frozenset(Path(i).name for part in ("train", "val") for i in split.get(part) or [] if isinstance(i, str))


def score_cohort(root: str | Path, loaded: Any, threshold: float = 0.5, cancel: Any = None,
                 progress: Callable[[float, str], None] | None = None) -> CohortResult:
    """Score every image of ``root``; an image that fails gets its reason and NaN. A set ``cancel``
    event stops after the current image (what was scored is returned, ``cancelled`` True)."""
    items = find_images(root)
    use_masks = _uses_masks(loaded)
    rows: list[CohortRow] = []
    for i, item in enumerate(items):
        if cancel is not None and cancel.is_set():
            return CohortResult(str(root), rows, threshold, cancelled=True, seen_names=seen_by(loaded))
        if progress is not None:
            progress(i / len(items), f"Scoring {item.path.name} ({i + 1}/{len(items)})")
        try:
            p, hit = score_one(loaded, item, use_masks)
            rows.append(CohortRow(str(item.path), item.label, p, lesion_hit=hit))
        except (ValueError, OSError) as e:
            rows.append(CohortRow(str(item.path), item.label, float("nan"), str(e).splitlines()[0]))
    if progress is not None:
        progress(1.0, f"Scored {len(rows)} image(s)")
    return CohortResult(str(root), rows, threshold, seen_names=seen_by(loaded))
