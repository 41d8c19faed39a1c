"""Export one view: overlay PNG + raw map (.npy) + JSON sidecar, and re-render from the sidecar.

``export_view(stem, pixels, heat, settings)`` writes

* ``<stem>.png``  the overlay at the radiograph's full resolution (``render.overlay``, the same
  tables the screen uses), over the geometry's crop box when the settings carry a geometry (the GUI
  draws the heatmap there too), encoded deterministically (OpenCV, fixed compression level);
* ``<stem>.npy``  the heat map, float32, on the original radiograph's grid;
* ``<stem>.json`` every setting needed to re-render it (image and checkpoint paths + sha256, layer,
  channel, method, class, threshold, opacity, colormap, scale, PreprocessSpec, geometry, versions);
  what it says about the view comes from the one builder, `core.render.sidecar.sidecar_settings`.

``rerender(sidecar)`` rebuilds the overlay from the sidecar, the .npy and the original image: encoded
with `encode_png` it equals the exported PNG byte for byte. Writes are atomic (temporary files, then
``os.replace``); existing files are never overwritten unless ``overwrite=True``.
"""
from __future__ import annotations

import hashlib
import json
import os
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cxr_studio.core.atomic import publish_exclusive, temp_name
from cxr_studio.core.hashing import file_sha256
from cxr_studio.core.versions import versions
from cxr_studio.core.imaging import png
from cxr_studio.core.render import overlay
from cxr_studio.core.imaging.io import read_image

SIDECAR_FORMAT = 1
SUFFIXES = (".png", ".npy", ".json")
RENDER_KEYS = ("colormap", "threshold", "opacity")


class ExportError(ValueError):
    """An export could not be written or re-rendered; the message says why."""


class ExportExists(ExportError):
    """One of the three files already exists (perhaps written a moment ago by another process)."""


@dataclass(frozen=True)
class ExportResult:
    png: Path
    npy: Path
    json: Path

    def paths(self) -> tuple[Path, Path, Path]:
        return (self.png, self.npy, self.json)


def _paths(stem: str | os.PathLike) -> tuple[Path, Path, Path]:
    s = str(stem)
    for suf in SUFFIXES:  # "out/x.png" and "out/x" name the same export
        if s.lower().endswith(suf):
            s = s[: -len(suf)]
            break
    return (Path(s + ".png"), Path(s + ".npy"), Path(s + ".json"))


def unique_stem(out_dir: str | os.PathLike, base: str) -> Path:
    """The first of ``out_dir/base``, ``out_dir/base_1``, ... for which none of the three files exists."""
    d = Path(out_dir)
    for i in range(100_000):
        stem = d / (base if i == 0 else f"{base}_{i}")
        if not any(p.exists() for p in _paths(stem)):
            return stem
    raise ExportError(f"Could not find a free file name for {base!r} in {d}.")


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes (deterministic: the one PNG encoder, fixed compression)."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ExportError(f"encode_png needs an (H, W, 3) uint8 image, got {a.shape} {a.dtype}.")
    return png.encode_png(a)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def overlay_box(settings: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """The part of the image the heat map covers: ``map_box`` (where a layer map has a value at all;
    outside it the app draws nothing, so even threshold 0 leaves it uncoloured), else the geometry's
    crop box (what the model saw), or None (the whole image) when the settings carry neither."""
    box = settings.get("map_box")
    if isinstance(box, (list, tuple)) and len(box) == 4:
        return tuple(int(v) for v in box)  # type: ignore[return-value]
    geom = settings.get("geometry")
    box = geom.get("crop_box") if isinstance(geom, dict) else None
    return tuple(int(v) for v in box) if box is not None else None  # type: ignore[return-value]


def _render(pixels: np.ndarray, heat: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    missing = [k for k in RENDER_KEYS if k not in settings]
    if missing:
        raise ExportError(f"Export settings lack {', '.join(missing)}.")
    try:
        return overlay(
            pixels, heat, settings["colormap"], float(settings["threshold"]), float(settings["opacity"]),
            box=overlay_box(settings),
        )
    except (ValueError, TypeError) as e:
        raise ExportError(f"Cannot render the overlay: {e}") from e


def _check_arrays(pixels: Any, heat: Any) -> tuple[np.ndarray, np.ndarray]:
    px = np.asarray(pixels, dtype=np.float32)
    hm = np.asarray(heat, dtype=np.float32)
    if px.ndim != 2:
        raise ExportError(f"The radiograph must be a 2-D image, got shape {px.shape}.")
    if hm.shape != px.shape:
        raise ExportError(
            f"The heat map {hm.shape} must be on the radiograph's grid {px.shape} (map it with "
            "Geometry.map_to_original first)."
        )
    if not np.isfinite(hm).all():
        raise ExportError("The heat map contains NaN or infinite values.")
    return px, hm


def _write_temp(dest: Path, data: bytes | None = None, array: np.ndarray | None = None) -> Path:
    tmp = temp_name(dest)  # carries the pid: a killed export's leftovers can be told apart and removed
    try:
        with open(tmp, "xb") as f:
            if array is not None:
                np.save(f, array, allow_pickle=False)
            else:
                f.write(data or b"")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def export_view(
    out_stem: str | os.PathLike,
    pixels: np.ndarray,
    heat_map: np.ndarray,
    settings: dict[str, Any],
    overwrite: bool = False,
) -> ExportResult:
    """Write ``<stem>.png``, ``<stem>.npy`` and ``<stem>.json`` (see the module docstring).

    ``pixels``: the radiograph (H, W) 0..1; ``heat_map``: (H, W) 0..1 on the same grid;
    ``settings``: at least ``colormap``, ``threshold``, ``opacity`` plus whatever describes the view
    (what `core.render.sidecar.sidecar_settings` builds for the app and the batch exporter).
    ``image_path`` / ``checkpoint_path`` are hashed here when the files exist (``image_sha256`` is
    None for an in-memory image). Raises `ExportError` if a file exists and not ``overwrite``.
    """
    px, hm = _check_arrays(pixels, heat_map)
    png, npy, js = _paths(out_stem)
    if not overwrite:
        existing = [str(p) for p in (png, npy, js) if p.exists()]
        if existing:
            raise ExportExists(
                f"Not overwriting existing file(s): {', '.join(existing)}. Choose another name or "
                "allow overwriting."
            )
    png.parent.mkdir(parents=True, exist_ok=True)
    rgb = _render(px, hm, settings)
    png_bytes = encode_png(rgb)

    side: dict[str, Any] = {"format": "cxr-studio-export", "format_version": SIDECAR_FORMAT}
    side.update(settings)
    for key in ("image", "checkpoint"):
        p = settings.get(f"{key}_path")
        side.setdefault(f"{key}_sha256", None)  # the same keys for an in-memory image (a phantom)
        if p and not settings.get(f"{key}_sha256") and Path(p).is_file():
            side[f"{key}_sha256"] = file_sha256(p)
        if p:
            side[f"{key}_path"] = str(Path(p).resolve())
    side.update(
        {
            "png": png.name,
            "npy": npy.name,
            "image_shape": list(px.shape),
            "png_sha256": hashlib.sha256(png_bytes).hexdigest(),
            "npy_sha256": None,  # filled below from the bytes written
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )

    temps: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        t_png = _write_temp(png, png_bytes)
        temps.append((t_png, png))
        t_npy = _write_temp(npy, array=hm)
        temps.append((t_npy, npy))
        side["npy_sha256"] = file_sha256(t_npy)
        try:
            text = json.dumps(side, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as e:
            bad = _non_finite_keys(side)
            if bad:
                raise ExportError(
                    f"The export settings hold values that are not finite numbers (NaN or infinity) in "
                    f"{', '.join(bad)}; the model's output is probably not finite (damaged or diverged weights)."
                ) from e
            raise ExportError(f"The export settings cannot be stored as JSON: {e}") from e
        temps.append((_write_temp(js, text.encode("utf-8")), js))
        for tmp, dest in temps:  # the sidecar goes last: its presence marks a complete export
            if overwrite:
                os.replace(tmp, dest)
            else:  # exclusive: a name another process took since the check above is never replaced
                try:
                    publish_exclusive(tmp, dest)
                except FileExistsError:
                    raise ExportExists(f"Not overwriting {dest}: it appeared while this export was written "
                                       "(another export into the same folder?).") from None
            done.append(dest)
    except BaseException:
        for tmp, _ in temps:
            _unlink(tmp)
        if not overwrite:  # never leave half an export; the files did not exist before
            for dest in done:
                _unlink(dest)
        raise
    return ExportResult(png, npy, js)


def _non_finite_keys(obj: Any, prefix: str = "") -> list[str]:
    """Where a nested settings dict holds NaN or infinity (e.g. ``probabilities``)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _non_finite_keys(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        if any(_non_finite_keys(v, prefix) for v in obj):
            out.append(prefix)
    elif isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        out.append(prefix)
    return out


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check an export sidecar."""
    p = Path(path)
    try:
        side = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{p} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{p} is not a readable export sidecar ({e}).") from None
    if not isinstance(side, dict) or side.get("format") != "cxr-studio-export":
        raise ExportError(f"{p} is not a CXR Studio export sidecar.")
    if side.get("format_version") != SIDECAR_FORMAT:
        raise ExportError(f"{p} has sidecar format {side.get('format_version')!r}; this version reads {SIDECAR_FORMAT}.")
    return side


def rerender(sidecar_path: str | os.PathLike, pixels: np.ndarray | None = None) -> np.ndarray:
    """Re-render the overlay (H, W, 3) uint8 from a sidecar, its .npy and the original image.

    The image is read from the sidecar's ``image_path`` (and checked against its sha256) unless
    ``pixels`` is given (for views of in-memory images such as phantoms).
    """
    sp = Path(sidecar_path)
    side = read_sidecar(sp)
    npy = sp.parent / side["npy"]
    if not npy.is_file():
        raise ExportError(f"The raw map {npy} named by {sp.name} is missing.")
    if side.get("npy_sha256") and file_sha256(npy) != side["npy_sha256"]:
        raise ExportError(f"{npy} has changed since it was exported (sha256 differs).")
    heat = np.load(npy, allow_pickle=False)
    if pixels is None:
        img = side.get("image_path")
        if not img:
            raise ExportError(f"{sp.name} names no image file; pass the radiograph's pixels.")
        if not Path(img).is_file():
            raise ExportError(f"The original image {img} is missing.")
        if side.get("image_sha256") and file_sha256(img) != side["image_sha256"]:
            raise ExportError(f"The original image {img} has changed since the export (sha256 differs).")
        pixels = read_image(img).pixels
    px, hm = _check_arrays(pixels, heat)
    return _render(px, hm, side)

