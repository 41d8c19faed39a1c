"""From data roots + recipe to cached train/val/test datasets, with the split written to the run folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data import (
    DatasetError,
    group_key,
    PreprocessCache,
    Sample,
    manifest_hash,
    read_split,
    scan_roots,
    split_file_seed,
    select,
    stratified_split,
    write_split,
)
from .recipes import Recipe
from .tensors import CachedImages


@dataclass
class PreparedData:
    samples: list[Sample]
    split: dict[str, list[str]]
    train: CachedImages
    val: CachedImages
    test: CachedImages
    manifest: str
    cache: PreprocessCache
    split_seed: int | None = None  # what the split was drawn with: a given file's own (None: made by hand)


def group_ids(samples: list[Sample]) -> np.ndarray:
    """Integer group of each sample (see ``data.group_key``), numbered in order of appearance."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(group_key(s), len(ids)) for s in samples], dtype=np.int64)


def default_cache_dir(out_dir: str | Path | None, recipe: Recipe) -> Path:
    """``recipe.cache_dir``, else ``$CXR_STUDIO_CACHE``, else ``<out>/../.cache``, else ~/.cache/cxr-studio."""
    if recipe.cache_dir:
        return Path(recipe.cache_dir).expanduser()
    env = os.environ.get("CXR_STUDIO_CACHE")
    if env:
        return Path(env)
    if out_dir is not None:
        return Path(out_dir).resolve().parent / ".cache"
    return Path.home() / ".cache" / "cxr-studio"


def make_cache(recipe: Recipe, cache_dir: Path, preprocess_fn: Callable[..., np.ndarray] | None = None,
               spec: Any = None, size: int | None = None) -> PreprocessCache:
    spec = spec or recipe.spec
    return PreprocessCache(cache_dir, spec, size or recipe.cache_size, recipe.use_dataset_masks, preprocess_fn)


def dataset_for(samples: list[Sample], cache: PreprocessCache, spec: Any, recipe: Recipe | None = None,
                train: bool = False, progress: bool = False) -> CachedImages:
    images = cache.load_all(samples, progress=progress) if samples else np.zeros((0, cache.size, cache.size), np.uint8)
    kw: dict[str, Any] = {}
    if train and recipe is not None:
        kw = dict(rotation_deg=recipe.rotation_deg, translate_px=recipe.translate_px, hflip=recipe.hflip,
                  intensity_jitter=recipe.intensity_jitter,
                  seed=recipe.seed, aug_keys=group_ids(samples) if recipe.pair_batches else None)
    return CachedImages(images, [s.label for s in samples], spec, train=train, **kw)


def prepare_data(
    recipe: Recipe,
    roots: list[str | Path],
    out_dir: str | Path,
    split_file: str | Path | None = None,
    preprocess_fn: Callable[..., np.ndarray] | None = None,
    progress: bool = True,
    write: bool = True,
) -> PreparedData:
    """Scan roots, split (or reuse ``split_file`` / the run folder's split.json), cache and wrap."""
    out_dir = Path(out_dir)
    samples = scan_roots(list(roots))
    existing = out_dir / "split.json"
    source = split_file if split_file is not None else existing if existing.exists() else None
    if source is not None:  # a split file keeps its own seed: a run may train with another seed on it
        split, split_seed = read_split(source, samples), split_file_seed(source)
    else:
        split, split_seed = stratified_split(samples, list(recipe.split), recipe.split_rng_seed), recipe.split_rng_seed
    if not split["train"]:
        raise DatasetError("the training split is empty: give more images")
    if write:
        write_split(existing, split, split_seed, list(recipe.split))
    cache = make_cache(recipe, default_cache_dir(out_dir, recipe), preprocess_fn)
    spec = recipe.spec
    tr = select(samples, split["train"])
    va = select(samples, split["val"])
    te = select(samples, split["test"])
    return PreparedData(
        samples=samples,
        split=split,
        train=dataset_for(tr, cache, spec, recipe, train=True, progress=progress),
        val=dataset_for(va, cache, spec, progress=progress),
        test=dataset_for(te, cache, spec, progress=progress),
        manifest=manifest_hash(samples),
        cache=cache,
        split_seed=split_seed,
    )
