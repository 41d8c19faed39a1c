"""Scores of the heatmap on screen against a lesion outline, live as the user moves the threshold.

The same measures as `cxr-studio-train localize` (`localisation`), for one map and the current
display threshold instead of a threshold chosen on validation images:

- ``pointing_hit``: the map's peak lies in the lesion grown by the tolerance (8 px at 512, scaled
  with the image); with tied maxima the share of them inside (see `localisation.pointing_hit`);
- ``energy_inside``: the share of the map's mass inside the (ungrown) lesion;
- ``iou``: intersection over union of ``map >= threshold`` (what the overlay colours) with the lesion.

Maps and masks are scored on the original radiograph's grid, shrunk to at most `SCORE_SIDE` pixels
on the long side (area average for the map, any-pixel for the lesion) so a threshold change stays
interactive on a 4000-pixel DICOM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cxr_studio.core.imaging.stages import place_map, shrink
from cxr_studio.core.inspect.localisation import grow, pointing_hit, tolerance_for
from cxr_studio.core.inspect.metrics import energy_inside

SCORE_SIDE = 1024
DEFAULT_TOLERANCE_PX = 8.0


@dataclass(eq=False)
class LesionTarget:
    """One lesion outline prepared for repeated scoring: the mask on the scoring grid and grown."""

    lesion: np.ndarray  # bool (h, w) on the scoring grid
    grown: np.ndarray  # bool (h, w): grown by the scaled tolerance
    source: str = ""  # where the outline came from ("lesion_mask", "via-json", "phantom", ...)
    tolerance_px: float = DEFAULT_TOLERANCE_PX

    @classmethod
    def from_mask(cls, mask: np.ndarray, source: str = "", tolerance_px: float = DEFAULT_TOLERANCE_PX,
                  side: int = SCORE_SIDE) -> "LesionTarget":
        m = np.asarray(mask).astype(bool)
        if m.ndim != 2:
            raise ValueError(f"a lesion mask is one 2-D image; got shape {m.shape}")
        small = shrink(m.astype(np.float32), side)[0] > 0  # any lesion pixel in a cell counts
        return cls(small, grow(small, tolerance_for(small.shape, tolerance_px)), source, float(tolerance_px))


def prepare_map(map_original: np.ndarray, target: LesionTarget) -> np.ndarray:
    """The (H, W) map of the original radiograph on ``target``'s scoring grid (float32)."""
    m = np.nan_to_num(np.asarray(map_original, dtype=np.float32))
    if m.shape == target.lesion.shape:
        return m
    h, w = target.lesion.shape
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)


def map_on_grid(map_input: np.ndarray, crop_box: tuple[int, int, int, int], original_size: tuple[int, int],
                target: LesionTarget) -> np.ndarray:
    """A map covering the model input, placed over ``crop_box`` (y0, x0, y1, x1) of the original
    radiograph (``original_size``), straight onto ``target``'s scoring grid: what
    `Geometry.map_to_original` then `prepare_map` give, without the full-resolution detour."""
    h, w = (int(v) for v in original_size)
    gh, gw = target.lesion.shape
    return place_map(np.nan_to_num(np.asarray(map_input, dtype=np.float32)), crop_box, (gh, gw), gh / h, gw / w)


def score(small_map: np.ndarray, target: LesionTarget, threshold: float) -> dict[str, Any]:
    """Pointing hit, energy inside and IoU at ``threshold`` of a map prepared by `prepare_map`.
    A map with no positive value scores no hit and no energy (nothing points anywhere)."""
    m = np.asarray(small_map, dtype=np.float32)
    has_map = bool(m.size) and float(m.max()) > 0
    on = m >= float(threshold) if has_map else np.zeros(m.shape, bool)
    union = np.logical_or(on, target.lesion).sum()
    return {
        "pointing_hit": pointing_hit(m, target.grown) if has_map else 0.0,
        "energy_inside": energy_inside(m, target.lesion) if has_map else 0.0,
        "iou": float(np.logical_and(on, target.lesion).sum() / union) if union else 0.0,
        "threshold": float(threshold),
        "tolerance_px": target.tolerance_px,
        "lesion_source": target.source,
    }


def lesion_scores(map_original: np.ndarray, lesion_mask: np.ndarray, threshold: float,
                  tolerance_px: float = DEFAULT_TOLERANCE_PX, source: str = "") -> dict[str, Any]:
    """One call: `score` of ``map_original`` against ``lesion_mask`` (both on the original grid)."""
    target = LesionTarget.from_mask(lesion_mask, source, tolerance_px)
    return score(prepare_map(map_original, target), target, threshold)


def describe(scores: dict[str, Any] | None, sep: str = " · ") -> str:
    """The scores in words, joined by ``sep`` (the Heatmap dock puts each on its own line)."""
    if not scores:
        return ""
    hit = scores["pointing_hit"]
    peak = "peak in lesion" if hit >= 1.0 else ("peak outside lesion" if hit <= 0.0 else f"peak in lesion {hit:.0%}")
    return sep.join((peak, f"energy inside {scores['energy_inside']:.0%}",
                     f"IoU at {scores['threshold']:.2f}: {scores['iou']:.2f}"))
