"""Figures for ``cxr-studio-train localize``: per image, a row of method overlays (the app's jet
overlay, `core.render.overlay`) with the lesion outline in magenta and the lungs in white; and the
randomisation cascade (per method, the trained map then each step with one more layer randomised)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.render import overlay
from ..core.imaging.png import write_png

TILE = 256
LESION_RGB = (255, 0, 255)
LUNG_RGB = (255, 255, 255)
THRESHOLD, OPACITY = 0.3, 0.6


def _tile(pre: Any, m: np.ndarray, lesion: np.ndarray | None, lungs: np.ndarray | None, label: str) -> np.ndarray:
    rgb = overlay(pre.original, m, "jet", THRESHOLD, OPACITY, box=pre.geometry.crop_box)
    h, w = rgb.shape[:2]
    s = TILE / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    rgb = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    for mask, colour in ((lungs, LUNG_RGB), (lesion, LESION_RGB)):
        if mask is None:
            continue
        small = cv2.resize(np.asarray(mask, np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, colour, 1, lineType=cv2.LINE_AA)
    out = np.zeros((TILE + 18, TILE, 3), np.uint8)
    out[18 : 18 + rgb.shape[0], : rgb.shape[1]] = rgb
    cv2.putText(out, label[:32], (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _write(path: Path, rgb: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(write_png(path, rgb))


def write_method_rows(folder: Path, items: list[tuple[Any, dict[str, np.ndarray]]], methods: list[str]) -> list[str]:
    """One PNG per image: the radiograph with both outlines, then one overlay per method."""
    paths = []
    for p, maps in items:
        tiles = [_tile(p.pre, np.zeros(p.lesion.shape, np.float32), p.lesion, p.lungs, p.sample.path.stem)]
        tiles += [_tile(p.pre, maps[m], p.lesion, None, m) for m in methods if m in maps]
        paths.append(_write(folder / f"{p.sample.path.stem}_methods.png", np.hstack(tiles)))
    return paths


def write_cascade_figure(folder: Path, p: Any, maps: dict[str, list[tuple[str, np.ndarray]]]) -> str:
    """One row per method: the trained map, then each cascading-randomisation step (on the input,
    mapped onto the radiograph)."""
    rows = []
    for m, steps in maps.items():
        tiles = [_tile(p.pre, p.pre.geometry.map_to_original(a), p.lesion, None,
                       f"{m}: {'trained' if i == 0 else '-' + name}") for i, (name, a) in enumerate(steps)]
        rows.append(np.hstack(tiles))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return _write(folder / f"{p.sample.path.stem}_randomisation_cascade.png", np.vstack(rows))
