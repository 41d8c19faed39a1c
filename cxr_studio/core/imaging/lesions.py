"""Lesion masks beside a radiograph, in either layout:

- ours (and the phantoms'): ``<root>/lesion_mask/<stem>_lesion.png`` for ``<root>/CXR_png/<stem>.png``
  (or ``<stem>_lesion.png`` in the image's own folder), nonzero = lesion;
- the Shenzhen annotation release (Yang et al., Data 2022): ``Annotations_AllinOne_json.json`` in the
  root or the image's folder, VGG Image Annotator format (key = file name + size; ``regions[]`` with
  ``shape_attributes`` polygon ``all_points_x/all_points_y``, polyline, or point ``cx/cy``), in the
  image's pixel coordinates. Polygons are filled, polylines drawn 3 px wide and points as 6 px discs
  (at 512 px; scaled with the image), as the dataset's own masks were made.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_studio.core.imaging.masks import MaskReadError, read_mask

VIA_FILE = "Annotations_AllinOne_json.json"
_VIA_CACHE: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}


class LesionError(ValueError):
    """A lesion mask or annotation file that cannot be read."""


def read_via(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """File name -> its regions, from a VIA project/export JSON (cached per file and mtime)."""
    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime)
    if key in _VIA_CACHE:
        return _VIA_CACHE[key]
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LesionError(f"{p} is not a readable annotation file (JSON): {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict):
        raise LesionError(f"{p} is not a VGG Image Annotator file: expected an object keyed by file name")
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in data.values():
        if isinstance(entry, dict) and isinstance(entry.get("filename"), str):
            regions = entry.get("regions") or []
            out.setdefault(entry["filename"], []).extend(r for r in regions if isinstance(r, dict))
    _VIA_CACHE[key] = out
    return out


def rasterise(regions: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """The union of VIA ``regions`` as a bool mask of ``shape`` (H, W)."""
    h, w = int(shape[0]), int(shape[1])
    scale = max(h, w) / 512.0
    canvas = np.zeros((h, w), np.uint8)
    for r in regions:
        a = r.get("shape_attributes") or {}
        kind = a.get("name")
        try:
            if kind in ("polygon", "polyline"):
                pts = np.stack([np.asarray(a["all_points_x"], float), np.asarray(a["all_points_y"], float)], 1)
                pts = np.round(pts).astype(np.int32)[None]
                if kind == "polygon" and pts.shape[1] >= 3:
                    cv2.fillPoly(canvas, pts, 1)
                else:
                    cv2.polylines(canvas, pts, False, 1, max(1, round(3 * scale)))
            elif kind in ("point", "circle", "ellipse"):
                cx, cy = float(a["cx"]), float(a["cy"])
                rad = float(a.get("r", a.get("rx", 3 * scale)))
                cv2.circle(canvas, (round(cx), round(cy)), max(1, round(rad)), 1, -1)
            elif kind == "rect":
                x, y, rw, rh = (round(float(a[k])) for k in ("x", "y", "width", "height"))
                canvas[max(0, y): y + rh, max(0, x): x + rw] = 1
        except (KeyError, TypeError, ValueError):
            continue  # a malformed region is skipped, the others still count
    return canvas > 0


def _candidates(image_path: Path) -> list[Path]:
    folders = [image_path.parent]
    if image_path.parent.name == "CXR_png":
        folders.insert(0, image_path.parent.parent)
    return folders


def find_lesion_mask(image_path: str | Path, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """(bool mask of ``shape`` or None, where it came from: "lesion_mask", "via-json" or "none").
    A mask PNG of another size is resized (nearest neighbour)."""
    p = Path(image_path)
    for folder in _candidates(p):
        for cand in (folder / "lesion_mask" / f"{p.stem}_lesion{p.suffix}",
                     folder / "lesion_mask" / f"{p.stem}_lesion.png",
                     p.parent / f"{p.stem}_lesion.png"):
            if cand.is_file():
                try:  # the one mask reader; nonzero = lesion, resized (nearest) to the image
                    return read_mask(cand, tuple(shape[:2]), rule="nonzero"), "lesion_mask"
                except MaskReadError as e:
                    raise LesionError(str(e)) from None
    for folder in _candidates(p):
        via = folder / VIA_FILE
        if via.is_file():
            regions = read_via(via)
            if p.name in regions:
                return rasterise(regions[p.name], shape), "via-json"
    return None, "none"


def lesion_from_json(image_path: str | Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask from the release JSON only (None when there is no JSON entry for the image)."""
    p = Path(image_path)
    for folder in _candidates(p):
        via = folder / VIA_FILE
        if via.is_file():
            regions = read_via(via)
            if p.name in regions:
                return rasterise(regions[p.name], shape)
    return None
