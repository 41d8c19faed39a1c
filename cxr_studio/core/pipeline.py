"""Preprocessing: lung segmentation -> crop to the lungs -> resize -> CLAHE -> model input.

It composes two parts, so it sits above both: ``imaging`` (reading, the stages after segmentation) and
``lungs`` (segmentation, which itself uses imaging's stages and mask reader). Scripts have always
found `preprocess` here.

`PreprocessSpec` (spec.py) is a plain dataclass of plain values (it travels inside checkpoints);
`preprocess()` segments the lungs (core.lungs) and runs the later stages (stages.py), keeping every
stage and the `Geometry` that maps model-input coordinates back onto the original radiograph, so a
heatmap can be drawn on the full-resolution image. The names of stages.py and spec.py are
re-exported here, where callers have always found them.
"""
from __future__ import annotations

import time

import numpy as np

from cxr_studio.core.imaging.radiograph import Radiograph
from cxr_studio.core.imaging.spec import NORMALIZATIONS, SEGMENTATION_METHODS, PreprocessSpec  # noqa: F401 (re-exported)
from cxr_studio.core.imaging.stages import (  # noqa: F401 (re-exported)
    MIN_LUNG_FRACTION, Geometry, Preprocessed, apply_clahe, lung_crop_box, normalize, place_map, prepare,
    scaled_box, shrink,
)
from cxr_studio.core.lungs import segment_lungs_detailed


def preprocess(
    radiograph: Radiograph,
    spec: PreprocessSpec | None = None,
    lung_mask: np.ndarray | None = None,
) -> Preprocessed:
    """Run the pipeline. ``lung_mask`` (bool, the radiograph's shape) skips segmentation."""
    spec = spec or PreprocessSpec()
    spec.validate()
    t: dict[str, float] = {}
    warnings: list[str] = []  # the segmentation's (prepare puts the reader's first)
    px = radiograph.pixels

    t0 = time.perf_counter()
    method_used = "given"
    if lung_mask is not None:
        lung_mask = np.asarray(lung_mask, dtype=bool)
        if lung_mask.shape != px.shape:
            raise ValueError(f"lung mask shape {lung_mask.shape} does not match the image {px.shape}")
    elif spec.segmentation != "none":
        seg = segment_lungs_detailed(px, method=spec.segmentation, atlas=spec.atlas_dir)
        lung_mask, method_used = seg.mask, seg.method
        warnings.extend(seg.warnings)
    else:
        method_used = "none"
    t["segmentation"] = time.perf_counter() - t0

    return prepare(radiograph, spec, lung_mask, method_used, warnings, t)
