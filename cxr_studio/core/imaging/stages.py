"""The stages after lung segmentation: crop to the lungs -> resize -> CLAHE -> model input, and the
`Geometry` that maps model-input coordinates back onto the original radiograph.

`prepare` runs them on a radiograph and a lung mask already made (or none); `pipeline.preprocess`
segments first and then calls it. Its own module so that the lung segmenters (``lungs.unet`` runs
its network on a prepared input) need not import the pipeline, which imports them.

Coordinate convention: a point is ``(x, y)`` in pixel-index units, the centre of pixel ``[r, c]``
being ``(x=c, y=r)``. Resizing follows the half-pixel (centres aligned) convention that
``cv2.resize`` uses, so points and maps stay consistent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cxr_studio.core.imaging.radiograph import Radiograph
from cxr_studio.core.imaging.spec import NORMALIZATIONS, PreprocessSpec


def shrink(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """(``image`` area-averaged so its long side is at most ``side``, the scale used); the image
    itself, unchanged, with scale 1.0 when it is small enough already."""
    h, w = image.shape[:2]
    s = min(1.0, side / max(h, w))
    if s >= 1.0:
        return image, 1.0
    small = cv2.resize(np.asarray(image, dtype=np.float32), (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return small, s


def scaled_box(crop_box: tuple[int, int, int, int], shape: tuple[int, int], scale: float = 1.0,
               scale_x: float | None = None) -> tuple[int, int, int, int]:
    """``crop_box`` (y0, x0, y1, x1 on the original) on a grid of ``shape`` showing it at ``scale``
    (``scale_x`` across when it differs): rounded, at least one pixel, inside the grid."""
    sx = scale if scale_x is None else scale_x
    y0, y1 = int(round(crop_box[0] * scale)), int(round(crop_box[2] * scale))
    x0, x1 = int(round(crop_box[1] * sx)), int(round(crop_box[3] * sx))
    return y0, x0, min(max(y1, y0 + 1), int(shape[0])), min(max(x1, x0 + 1), int(shape[1]))


def place_map(m: np.ndarray, crop_box: tuple[int, int, int, int], shape: tuple[int, int], scale: float = 1.0,
              scale_x: float | None = None, fill: float = 0.0, nearest: bool = False) -> np.ndarray:
    """A 2-D map covering the model input, resampled (bilinear, or nearest) over ``crop_box``
    (y0, x0, y1, x1 on the original radiograph) of a grid of ``shape`` that shows the radiograph at
    ``scale`` (``scale_x`` across, when it differs); ``fill`` outside the box. At scale 1 on the
    original's shape this is `Geometry.map_to_original`; the app's compare panes, sanity-check pictures
    and lesion scores use smaller grids."""
    y0, x0, y1, x1 = scaled_box(crop_box, shape, scale, scale_x)
    out = np.full(tuple(int(v) for v in shape), fill, dtype=np.float32)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out[y0:y1, x0:x1] = cv2.resize(np.asarray(m, dtype=np.float32), (x1 - x0, y1 - y0), interpolation=interp)
    return out


@dataclass(frozen=True)
class Geometry:
    """Maps between original-radiograph coordinates and model-input coordinates.

    The crop box ``(y0, x0, y1, x1)`` (end exclusive, original pixels) is stretched to a square of
    ``input_size`` (through ``intermediate_size``, which does not change the mapping).
    """

    original_size: tuple[int, int]  # (H, W)
    crop_box: tuple[int, int, int, int]  # (y0, x0, y1, x1)
    intermediate_size: int
    input_size: int

    @property
    def crop_hw(self) -> tuple[int, int]:
        y0, x0, y1, x1 = self.crop_box
        return (y1 - y0, x1 - x0)

    def original_to_input(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) array of (x, y) original pixel coordinates -> model-input pixel coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        y0, x0, _, _ = self.crop_box
        ch, cw = self.crop_hw
        n = self.input_size
        u = (p[:, 0] + 0.5 - x0) * (n / cw) - 0.5
        v = (p[:, 1] + 0.5 - y0) * (n / ch) - 0.5
        return np.stack([u, v], axis=1)

    def input_to_original(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) array of (x, y) model-input coordinates -> original pixel coordinates."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        y0, x0, _, _ = self.crop_box
        ch, cw = self.crop_hw
        n = self.input_size
        x = (p[:, 0] + 0.5) * (cw / n) - 0.5 + x0
        y = (p[:, 1] + 0.5) * (ch / n) - 0.5 + y0
        return np.stack([x, y], axis=1)

    def map_to_original(self, m: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resample a 2-D map covering the whole model input (any resolution, e.g. a 13x13
        activation) onto the original radiograph grid (H, W), bilinear; ``fill`` outside the crop."""
        m = np.asarray(m, dtype=np.float32)
        if m.ndim != 2:
            raise ValueError(f"map must be 2-D, got shape {m.shape}")
        return place_map(m, self.crop_box, self.original_size, fill=fill)

    def original_to_grid(self, image: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
        """Resample an original-grid image or mask (H, W) onto a (h, w) grid covering the model
        input, by area averaging (a bool mask becomes the fraction of each cell inside it)."""
        a = np.asarray(image)
        if a.shape != tuple(self.original_size):
            raise ValueError(f"expected an image of shape {self.original_size}, got {a.shape}")
        y0, x0, y1, x1 = self.crop_box
        crop = a[y0:y1, x0:x1].astype(np.float32)
        gh, gw = grid_shape
        return cv2.resize(crop, (int(gw), int(gh)), interpolation=cv2.INTER_AREA)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_size": list(self.original_size),
            "crop_box": list(self.crop_box),
            "intermediate_size": self.intermediate_size,
            "input_size": self.input_size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(
            original_size=tuple(int(v) for v in d["original_size"]),  # type: ignore[arg-type]
            crop_box=tuple(int(v) for v in d["crop_box"]),  # type: ignore[arg-type]
            intermediate_size=int(d["intermediate_size"]),
            input_size=int(d["input_size"]),
        )


@dataclass
class Preprocessed:
    """Every stage of the pipeline for one radiograph."""

    spec: PreprocessSpec
    geometry: Geometry
    original: np.ndarray  # (H, W) float32 0..1
    lung_mask: np.ndarray | None  # (H, W) bool, None when segmentation is "none"
    roi: np.ndarray  # crop of the original, float32 0..1 (may be a strided view)
    resized: np.ndarray  # (S, S) float32, S = intermediate_size
    enhanced: np.ndarray  # (S, S) float32 after CLAHE (== resized when CLAHE is off)
    display_input: np.ndarray  # (N, N) float32 0..1, the model input before normalisation
    model_input: np.ndarray  # (C, N, N) float32, normalised
    segmentation_method: str = "none"
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def tensor(self, device: Any = "cpu") -> Any:
        """The model input as a (1, C, N, N) torch tensor."""
        import torch  # torch-free at import: the GUI imports this module at start-up, before torch

        return torch.from_numpy(np.ascontiguousarray(self.model_input))[None].to(device)

    def stages(self) -> dict[str, np.ndarray]:
        """Viewable stages by name, in pipeline order (2-D float arrays in 0..1)."""
        out: dict[str, np.ndarray] = {"original": self.original}
        if self.lung_mask is not None:
            out["lung mask"] = self.lung_mask.astype(np.float32)
        out["roi"] = self.roi
        out["resized"] = self.resized
        out["clahe"] = self.enhanced
        out["model input"] = self.display_input
        return out


def lung_crop_box(mask: np.ndarray | None, shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """Bounding box (y0, x0, y1, x1) of the mask grown by ``margin`` of its size, clipped to the
    image; the whole image when the mask is None or empty."""
    h, w = shape
    if mask is None or not mask.any():
        return (0, 0, h, w)
    rows = np.flatnonzero(np.logical_or.reduce(mask, axis=1))
    cols = np.flatnonzero(np.logical_or.reduce(mask, axis=0))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    my = int(round((y1 - y0) * margin))
    mx = int(round((x1 - x0) * margin))
    return (max(0, y0 - my), max(0, x0 - mx), min(h, y1 + my), min(w, x1 + mx))


def apply_clahe(image: np.ndarray, clip: float, tiles: int) -> np.ndarray:
    """OpenCV CLAHE on a float 0..1 image, returns float32 0..1.

    Computed on 8 bits (256 bins, as MATLAB's adapthisteq and the paper's 8-bit images): OpenCV's
    16-bit CLAHE spreads the clip limit over 65536 bins, which makes ``clip`` mean something else."""
    u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(tiles), int(tiles)))
    return clahe.apply(u8).astype(np.float32) * (1.0 / 255.0)


def normalize(display: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, N) 0..1 -> (C, N, N) normalised float32."""
    mean, std = NORMALIZATIONS[spec.normalization]
    c = spec.channels
    x = np.repeat(display[None], c, axis=0).astype(np.float32)
    mean_a = np.broadcast_to(np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)[:c], (c, 1, 1))
    std_a = np.broadcast_to(np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)[:c], (c, 1, 1))
    return ((x - mean_a) / std_a).astype(np.float32)


MIN_LUNG_FRACTION = 0.02  # a mask covering less of the image than this is treated as a failure


def prepare(
    radiograph: Radiograph,
    spec: PreprocessSpec,
    lung_mask: np.ndarray | None = None,
    method_used: str = "none",
    warnings: list[str] | None = None,
    timings: dict[str, float] | None = None,
) -> Preprocessed:
    """Crop, resize, enhance and normalise ``radiograph`` for ``spec`` (no segmentation: the
    ``lung_mask`` given, made by ``method_used``, or none). The result's warnings are the reader's
    (a DICOM whose BitsStored disagrees with its data, ...), then ``warnings`` (the segmentation's)."""
    spec.validate()
    px = radiograph.pixels
    h, w = px.shape
    warnings = [str(w) for w in (getattr(radiograph, "meta", None) or {}).get("warnings", [])] + list(warnings or [])
    t: dict[str, float] = dict(timings or {})
    t0 = time.perf_counter()
    if lung_mask is not None and np.count_nonzero(lung_mask) < MIN_LUNG_FRACTION * lung_mask.size:
        warnings.append(
            "Lung segmentation found almost no lung; the whole image is used instead of a lung crop."
        )
        box = (0, 0, h, w)
    elif spec.crop:
        box = lung_crop_box(lung_mask, (h, w), spec.crop_margin)
    else:
        box = (0, 0, h, w)
    y0, x0, y1, x1 = box
    roi = px[y0:y1, x0:x1]
    if spec.blank_outside and lung_mask is not None and lung_mask.any():
        roi = roi * lung_mask[y0:y1, x0:x1]
    s = int(spec.intermediate_size)
    interp = cv2.INTER_AREA if (y1 - y0 > s or x1 - x0 > s) else cv2.INTER_LINEAR
    resized = cv2.resize(roi, (s, s), interpolation=interp)  # cv2 takes the strided view as is
    t["crop_resize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    enhanced = apply_clahe(resized, spec.clahe_clip, spec.clahe_tiles) if spec.clahe else resized
    t["clahe"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = int(spec.input_size)
    interp = cv2.INTER_AREA if s > n else cv2.INTER_LINEAR
    display = np.clip(cv2.resize(enhanced, (n, n), interpolation=interp), 0.0, 1.0).astype(np.float32)
    model_input = normalize(display, spec)
    t["model_input"] = time.perf_counter() - t0

    geometry = Geometry(original_size=(h, w), crop_box=box, intermediate_size=s, input_size=n)
    return Preprocessed(
        spec=spec,
        geometry=geometry,
        original=px,
        lung_mask=lung_mask,
        roi=roi,  # a view into the original (no copy) unless blanked
        resized=resized,
        enhanced=enhanced,
        display_input=display,
        model_input=model_input,
        segmentation_method=method_used,
        warnings=warnings,
        timings=t,
    )
