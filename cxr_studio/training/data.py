"""Datasets for training: find labelled images in the supported layouts, split them, and cache
their preprocessed pixels.

Layouts (auto-detected per root; a root holding several of them, like ``nlm-tb/``, is scanned one
level deep):
- NLM Montgomery: ``CXR_png/*_<0|1>.png``, ``ManualMask/leftMask|rightMask/<same name>``,
  ``ClinicalReadings/<stem>.txt`` when present.
- NLM Shenzhen and our phantoms: ``CXR_png/*_<0|1>.png``, optional ``mask/<stem>_mask.png``,
  phantoms add ``lesion_mask/<stem>_lesion.png``.
- A folder per class: ``normal/`` + ``abnormal/`` (or ``0/`` + ``1/``, ``negative/`` + ``positive/``).
- A CSV file with a header ``path,label`` (paths relative to the CSV's folder).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import cv2
from tqdm import tqdm
from ..core.atomic import atomic_file, strict_json, write_text_atomic
from ..core.hashing import file_sha256
from ..core.imaging.io import SUPPORTED_SUFFIXES, link_problem, read_image
from ..core.imaging.masks import MaskReadError, read_mask as core_read_mask
from ..core.pipeline import preprocess
from ..core.resources import LUNG_SEGMENTER, find_resource

IMAGE_SUFFIXES = SUPPORTED_SUFFIXES  # the one suffix list (core.io), DICOM's .dicom/.dic included
CLASS_DIRS = {"normal": 0, "abnormal": 1, "0": 0, "1": 1, "negative": 0, "positive": 1, "tb": 1}
_LABEL_RE = re.compile(r"_([01])$")


class DatasetError(ValueError):
    """A data root, split file or image that cannot be used for training."""


@dataclass
class Sample:
    """One labelled image and what the dataset knows about it."""

    id: str  # stable identifier used in split files: "<root name>/<relative path>"
    path: Path
    label: int
    mask_paths: list[Path] = field(default_factory=list)  # lung masks (OR-ed together)
    lesion_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def label_from_name(path: Path) -> int | None:
    """Label from a file-name suffix ``_0`` / ``_1`` (NLM convention), else None."""
    m = _LABEL_RE.search(path.stem)
    return int(m.group(1)) if m else None


def _images(folder: Path) -> list[Path]:
    """The image files in ``folder``; one that is a symbolic link loop or a broken link is refused by
    name (skipping it silently would train on fewer images than the user gave)."""
    found = []
    for p in folder.iterdir():
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.is_file():
            found.append(p)
        elif not p.exists() and (why := link_problem(p)):
            raise DatasetError(f"{p} is {why}; remove it or point it at the image")
    return sorted(found)


def _scan_cxr_png(root: Path) -> list[Sample]:
    """Montgomery, Shenzhen and phantom layouts (all keep images in CXR_png/)."""
    out: list[Sample] = []
    left, right = root / "ManualMask" / "leftMask", root / "ManualMask" / "rightMask"
    readings = root / "ClinicalReadings"
    for img in _images(root / "CXR_png"):
        label = label_from_name(img)
        if label is None:
            continue
        masks: list[Path] = []
        if left.is_dir() and (left / img.name).exists() and (right / img.name).exists():
            masks = [left / img.name, right / img.name]
        elif (root / "mask" / f"{img.stem}_mask{img.suffix}").exists():
            masks = [root / "mask" / f"{img.stem}_mask{img.suffix}"]
        lesion = root / "lesion_mask" / f"{img.stem}_lesion{img.suffix}"
        meta: dict[str, Any] = {}
        reading = readings / f"{img.stem}.txt"
        if reading.exists():
            meta["clinical_reading"] = reading.read_text(errors="replace").strip()
        out.append(
            Sample(
                id=f"{root.name}/CXR_png/{img.name}",
                path=img,
                label=label,
                mask_paths=masks,
                lesion_path=lesion if lesion.exists() else None,
                meta=meta,
            )
        )
    return out


def _scan_class_dirs(root: Path) -> list[Sample]:
    out: list[Sample] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in CLASS_DIRS):
        label = CLASS_DIRS[sub.name.lower()]
        for img in _images(sub):
            out.append(Sample(id=f"{root.name}/{sub.name}/{img.name}", path=img, label=label))
    return out


def _scan_csv(csv_path: Path) -> list[Sample]:
    out: list[Sample] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path}: a CSV dataset needs a header with the columns path,label")
        for i, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise DatasetError(f"{csv_path} line {i}: label must be 0 or 1, got {row['label']!r}") from None
            if label not in (0, 1):
                raise DatasetError(f"{csv_path} line {i}: label must be 0 or 1, got {label}")
            try:
                p = (csv_path.parent / row["path"]).resolve()
            except (OSError, RuntimeError):  # a symbolic link loop
                raise DatasetError(f"{csv_path} line {i}: {row['path']} is a symbolic link loop") from None
            if not p.exists():
                raise DatasetError(f"{csv_path} line {i}: image not found: {row['path']}")
            out.append(Sample(id=f"{csv_path.stem}/{row['path']}", path=p, label=label))
    return out


def scan_root(root: str | Path) -> list[Sample]:
    """All labelled samples under one root (layout auto-detected)."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return _scan_csv(root)
    if not root.is_dir():
        raise DatasetError(f"data root not found: {root}")
    if (root / "CXR_png").is_dir():
        return _scan_cxr_png(root)
    if any(p.is_dir() and p.name.lower() in CLASS_DIRS for p in root.iterdir()):
        return _scan_class_dirs(root)
    found: list[Sample] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):  # e.g. nlm-tb/{MontgomerySet,ChinaSet_AllFiles}
        if (sub / "CXR_png").is_dir():
            found += _scan_cxr_png(sub)
    if not found:
        raise DatasetError(
            f"no labelled images found under {root}: expected CXR_png/*_0|1.png (NLM or phantom layout), "
            "class folders (normal/, abnormal/ or 0/, 1/), or a CSV file with path,label"
        )
    return found


def scan_roots(roots: list[str | Path]) -> list[Sample]:
    """Samples of several roots combined; ids must be unique."""
    samples: list[Sample] = []
    for r in roots:
        samples += scan_root(r)
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"the same image id appears twice ({dup}); give each root only once")
    if not samples:
        raise DatasetError("no labelled images in the given data roots")
    return samples


# -- splits -------------------------------------------------------------------------------------
def group_key(sample: Sample) -> str:
    """Images that must stay in the same part of a split: same dataset and same file stem apart from
    the label suffix (a paired phantom's normal and abnormal versions; otherwise one image each)."""
    return f"{sample.id.split('/', 1)[0]}/{_LABEL_RE.sub('', Path(sample.id).stem)}"


def stratified_split(samples: list[Sample], fractions: list[float], seed: int) -> dict[str, list[str]]:
    """Train/val/test ids, stratified by (dataset, labels), deterministic for a seed; images of one
    group (see ``group_key``) never straddle two parts."""
    members: dict[str, list[Sample]] = {}
    for s in samples:
        members.setdefault(group_key(s), []).append(s)
    strata: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for g, ms in members.items():
        strata.setdefault((g.split("/", 1)[0], tuple(sorted({m.label for m in ms}))), []).append(g)
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in sorted(strata):
        gs = sorted(strata[key])
        rng.shuffle(gs)
        n = len(gs)
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        n_train = max(0, n - n_val - n_test)
        parts = {"train": gs[:n_train], "val": gs[n_train : n_train + n_val], "test": gs[n_train + n_val :]}
        for part, chosen in parts.items():
            out[part] += [m.id for g in chosen for m in members[g]]
    return {k: sorted(v) for k, v in out.items()}


def write_json_atomic(path: Path, obj: Any) -> None:
    """Strict JSON (NaN and infinities become null: a metric that is undefined, like the AUC of one
    class), written atomically."""
    write_text_atomic(path, strict_json(obj, indent=2))


CLASS_NAMES = ("normal", "abnormal")


def check_both_classes(samples: list[Sample], where: str) -> None:
    """Refuse a set of images that holds only one class (a classifier trained or validated on it
    reports accuracy 1.000 and an undefined AUC), naming the missing class."""
    present = {s.label for s in samples}
    if len(present) == 1:
        (have,) = present
        missing = CLASS_NAMES[1 - have]
        raise DatasetError(
            f"{where}: all {len(samples)} images are labelled '{CLASS_NAMES[have]}' ({have}); no "
            f"'{missing}' ({1 - have}) image was found. Training needs both classes: add {missing} images "
            "(file names ending in _0 / _1, or normal/ and abnormal/ folders).")


def write_split(path: Path, split: dict[str, list[str]], seed: int | None, fractions: list[float]) -> None:
    write_json_atomic(path, {"seed": seed, "fractions": list(fractions), **split})


def read_split(path: str | Path, samples: list[Sample]) -> dict[str, list[str]]:
    """Read a split file and check that every id in it exists in ``samples``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"split file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not a valid split file (JSON): {exc}") from None
    if not all(isinstance(data.get(k), list) for k in ("train", "val", "test")):
        raise DatasetError(f"{path} is not a split file: it needs train, val and test lists")
    known = {s.id for s in samples}
    missing = [i for k in ("train", "val", "test") for i in data[k] if i not in known]
    if missing:
        raise DatasetError(
            f"{path} names {len(missing)} image(s) not found in the data roots (first: {missing[0]}): "
            "the split was made from other --data roots, or these images were removed since"
        )
    return {k: list(data[k]) for k in ("train", "val", "test")}


def split_file_seed(path: str | Path) -> int | None:
    """The seed a split file says it was drawn with; None for a split made by hand (no seed)."""
    try:
        seed = json.loads(Path(path).read_text(encoding="utf-8")).get("seed")
    except (OSError, ValueError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def select(samples: list[Sample], ids: list[str]) -> list[Sample]:
    by_id = {s.id: s for s in samples}
    return [by_id[i] for i in ids]


def manifest_hash(samples: list[Sample]) -> str:
    """A short hash of the ids and labels (goes into checkpoint provenance)."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.id):
        h.update(f"{s.id}\t{s.label}\n".encode())
    return h.hexdigest()[:16]


# -- preprocessing cache ------------------------------------------------------------------------


def read_radiograph(path: Path) -> Any:
    """``core.io.read_image`` (every supported format)."""
    return read_image(path)


def read_mask(paths: list[Path]) -> np.ndarray | None:
    """OR of the mask images (the one mask reader, ``core.imaging.masks``), or None without masks."""
    try:
        return core_read_mask(paths, rule="nonzero") if paths else None
    except MaskReadError as exc:
        raise DatasetError(str(exc)) from None


def default_preprocess_fn(sample: Sample, spec: Any, use_masks: bool) -> np.ndarray:
    """The pipeline's CLAHE image (intermediate size) for one sample, float32 0..1."""
    rad = read_radiograph(sample.path)
    mask = read_mask(sample.mask_paths) if use_masks else None
    if mask is not None and mask.shape != rad.shape:
        mask = cv2.resize(mask.astype(np.uint8), (rad.shape[1], rad.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return preprocess(rad, spec, lung_mask=mask).enhanced


def segmenter_id() -> str:
    """sha256 of the shipped lung segmenter's weights ("none" when it is not installed): part of
    the cache key when segmentation is learned, so retrained weights never reuse old crops."""
    path = find_resource(LUNG_SEGMENTER)
    return file_sha256(path) if path is not None else "none"


def load_cache_entry(path: Path, size: int) -> np.ndarray | None:
    """A cached (size, size) uint8 array, or None when it is missing or damaged (then recomputed)."""
    if not path.exists():
        return None
    try:
        arr = np.load(path)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == (size, size) and arr.dtype == np.uint8 else None


class PreprocessCache:
    """Preprocessed images as uint8 (size, size) arrays on disk, keyed by spec + file hashes.

    ``preprocess_fn(sample, spec, use_masks) -> float32 (S, S) 0..1`` is replaceable (tests count calls).
    """

    def __init__(
        self,
        folder: str | Path,
        spec: Any,
        size: int,
        use_masks: bool = True,
        preprocess_fn: Callable[..., np.ndarray] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.size = int(size)
        self.use_masks = use_masks
        self.preprocess_fn = preprocess_fn or default_preprocess_fn
        # the cache holds the gray image before normalisation / channel replication: those two
        # settings do not change it and are left out of the key
        key_spec = {k: v for k, v in spec.to_dict().items() if k not in ("normalization", "channels")}
        key_obj = {"spec": key_spec, "size": self.size, "masks": use_masks}
        if key_spec.get("segmentation") in ("auto", "unet"):  # new segmenter weights -> new crops
            key_obj["segmenter"] = segmenter_id()
        spec_text = json.dumps(key_obj, sort_keys=True)
        self.spec_key = hashlib.sha256(spec_text.encode()).hexdigest()[:16]
        self.hits = 0
        self.misses = 0

    def key(self, sample: Sample) -> str:
        parts = [file_sha256(sample.path)]
        if self.use_masks:
            parts += [file_sha256(p) for p in sample.mask_paths]
        return hashlib.sha256(("|".join(parts) + self.spec_key).encode()).hexdigest()[:32]

    def get(self, sample: Sample) -> np.ndarray:
        path = self.folder / self.spec_key / f"{self.key(sample)}.npy"
        arr = load_cache_entry(path, self.size)
        if arr is not None:
            self.hits += 1
            return arr
        self.misses += 1
        try:
            img = self.preprocess_fn(sample, self.spec, self.use_masks)
        except DatasetError:
            raise
        except ValueError as exc:
            raise DatasetError(f"cannot preprocess {sample.path}: {exc}") from None
        img = np.asarray(img, dtype=np.float32)
        if img.shape != (self.size, self.size):
            interp = cv2.INTER_AREA if img.shape[0] > self.size else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.size, self.size), interpolation=interp)
        arr = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        with atomic_file(path, "wb") as f:
            np.save(f, arr)
        return arr

    def load_all(self, samples: list[Sample], progress: bool = False) -> np.ndarray:
        """(N, S, S) uint8 for the samples, computing what is not cached yet."""
        it: Any = samples
        if progress:
            it = tqdm(samples, desc="preprocess (cached)", unit="img", leave=False)
        out = np.empty((len(samples), self.size, self.size), dtype=np.uint8)
        for i, s in enumerate(it):
            out[i] = self.get(s)
        return out
