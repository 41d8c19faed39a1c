"""The one builder of an export's settings: what the JSON sidecar beside an exported overlay says
about the view (``export.export_view`` adds the file names, hashes, versions and date).

Both exports use it: the app's "Export overlay" (``Session.render_settings``) and ``cxr-studio
export`` (``batch.export_one``), so the two sidecars carry the same keys (`SIDECAR_KEYS`; a value the
caller does not know is None, e.g. ``model_id`` and ``region`` on the command line).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: every key `sidecar_settings` returns (export_view adds format, png, npy, hashes, versions, created)
SIDECAR_KEYS: tuple[str, ...] = (
    "image_path", "model_id", "checkpoint_path", "checkpoint_sha256", "arch", "class_names", "multi_label",
    "probabilities", "layer", "channel", "method", "class_index", "class_name", "scale", "ranking", "region",
    "threshold", "opacity", "colormap", "spec", "geometry", "segmentation_used", "warnings", "lesion_scores",
    "map_box",
)


def region_dict(region: Any) -> dict[str, Any] | None:
    """A drawn region (``kind``, ``points`` in original-image (x, y)) as plain values, or None."""
    if region is None:
        return None
    pts = getattr(region, "points", [])
    return {"kind": str(region.kind), "points": [[float(x), float(y)] for x, y in pts]}


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def sidecar_settings(
    *,
    loaded: Any,
    layer: str | None,
    channel: int | None,
    method: str,
    class_index: int | None,
    scale: str,
    ranking: str,
    threshold: float,
    opacity: float,
    colormap: str,
    radiograph: Any = None,
    preprocessed: Any = None,
    spec: Any = None,
    probabilities: Sequence[float] | None = None,
    model_id: str | None = None,
    region: Any = None,
    image_path: str | None = None,
    checkpoint_path: str | None = None,
    lesion_scores: dict[str, Any] | None = None,
    valid: Any = None,
) -> dict[str, Any]:
    """The settings describing one exported view, with every key of `SIDECAR_KEYS`.

    ``loaded``: the LoadedCheckpoint (path, sha256, arch, class names, multi_label); ``radiograph`` /
    ``preprocessed``: the image and its pipeline result (path, geometry, segmentation used, warnings);
    ``spec``: the PreprocessSpec used (default: ``preprocessed.spec``); ``channel``: the channel shown
    (None for saliency methods); ``class_index``: the class explained or selected;
    ``image_path``: the file read (default: the radiograph's own path); ``checkpoint_path``: used when
    the model carries no path; ``lesion_scores``: the map against the image's lesion outline
    (`core.inspect.lesion_scores.score`), None when the image has none; ``valid``: (N, N) bool on the
    model input, where the map has a value (``map_box`` is its box on the radiograph: the export
    colours only there, as the app draws no-data transparent)."""
    names = list(getattr(loaded, "class_names", None) or [])
    model_path = getattr(loaded, "path", None)
    if spec is None and preprocessed is not None:
        spec = getattr(preprocessed, "spec", None)
    geometry = getattr(preprocessed, "geometry", None)
    meta = getattr(radiograph, "meta", None) or {}
    # the reader's warnings ride along in the pipeline's too: each once
    warnings = list(dict.fromkeys([*meta.get("warnings", []), *(getattr(preprocessed, "warnings", None) or [])]))
    image = getattr(radiograph, "path", None) if radiograph is not None else None
    ci = None if class_index is None else int(class_index)
    return {
        "image_path": str(image_path) if image_path else (str(image) if image else None),
        "model_id": model_id,
        "checkpoint_path": str(model_path) if model_path else (str(checkpoint_path) if checkpoint_path else None),
        "checkpoint_sha256": getattr(loaded, "sha256", None),
        "arch": getattr(loaded, "arch", None),
        "class_names": names,
        "multi_label": bool(getattr(loaded, "multi_label", False)),
        "probabilities": None if probabilities is None else [float(p) for p in probabilities],
        "layer": layer,
        "channel": channel,
        "method": method,
        "class_index": ci,
        "class_name": str(names[ci]) if ci is not None and 0 <= ci < len(names) else None,
        "scale": scale,
        "ranking": ranking,
        "region": region_dict(region),
        "threshold": threshold,
        "opacity": opacity,
        "colormap": colormap,
        "spec": _plain(spec),
        "geometry": None if geometry is None else _plain(geometry),
        "segmentation_used": getattr(preprocessed, "segmentation_method", None),
        "warnings": warnings,
        "lesion_scores": None if lesion_scores is None else dict(lesion_scores),
        "map_box": map_box(valid, geometry),
    }


def map_box(valid: Any, geometry: Any) -> list[int] | None:
    """[y0, x0, y1, x1] on the original radiograph of the part of the model input where a layer map has
    a value (its cells' receptive-field-centre span), or None (no mask, or no geometry: everywhere)."""
    if valid is None or geometry is None:
        return None
    v = np.asarray(valid, bool)
    if v.ndim != 2 or not v.any() or v.all():
        return None
    rows, cols = np.flatnonzero(v.any(1)), np.flatnonzero(v.any(0))
    cy0, cx0, cy1, cx1 = (int(c) for c in geometry.crop_box)
    sy, sx = (cy1 - cy0) / v.shape[0], (cx1 - cx0) / v.shape[1]
    y0, y1 = cy0 + int(np.floor(rows[0] * sy)), cy0 + int(np.ceil((rows[-1] + 1) * sy))
    x0, x1 = cx0 + int(np.floor(cols[0] * sx)), cx0 + int(np.ceil((cols[-1] + 1) * sx))
    return [max(cy0, y0), max(cx0, x0), min(cy1, y1), min(cx1, x1)]
