"""Functions the GUI sends to the worker thread (pure: arrays in, arrays out; no Qt here).

Everything shown is computed by `cxr_studio.core`; these only bundle core calls into one request
and shrink results to what a widget needs (thumbnails as small uint8 arrays).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

THUMB = 56  # channel-grid thumbnail side (pixels)
STAGE_THUMB = 112  # pipeline thumbnails


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    a = np.ascontiguousarray(a, dtype=np.float32)
    interp = cv2.INTER_AREA if a.shape[0] > h or a.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(a, (int(w), int(h)), interpolation=interp)


def thumbnail(a: np.ndarray, side: int) -> np.ndarray:
    """A 0..1 image scaled so its longer side is ``side``, as uint8."""
    from cxr_studio.core.render import to_uint8

    h, w = a.shape[:2]
    s = side / max(h, w)
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    step = min(h // (4 * th), w // (4 * tw))
    if step >= 2:  # every step-th pixel first, still >= 4x the thumbnail's size, then the area mean:
        # a 112 px picture of a 4020x4892 radiograph in ~2 ms instead of ~100 ms (reading all of it)
        a = a[::step, ::step]
    return to_uint8(_resize(a, tw, th))


@dataclass
class PipelineResult:
    radiograph: Any
    preprocessed: Any
    thumbnails: dict[str, np.ndarray]  # stage name -> uint8 thumbnail
    lung_method: str = "none"  # what made ``preprocessed.lung_mask``: "given", "unet", "heuristic", ... or "none"


def run_pipeline(radiograph: Any, spec: Any, lung_mask: np.ndarray | None = None,
                 mask_method: str | None = None) -> PipelineResult:
    """Read (when given a path) and preprocess a radiograph; thumbnails of every stage.

    ``lung_mask`` (made by ``mask_method``, e.g. "given" or a reused "unet" mask) replaces the
    segmentation. When the spec does not segment, the model input never sees a mask, but the lungs
    are still segmented ("auto", or ``lung_mask`` when given) for the outline and the "lungs"
    ranking; the mask then rides on the result, and a failure only adds a warning."""
    from cxr_studio.core.pipeline import preprocess

    if isinstance(radiograph, (str, os.PathLike)):
        from cxr_studio.core.imaging.io import read_image

        radiograph = read_image(radiograph)
    if spec.segmentation != "none":
        prep = preprocess(radiograph, spec, lung_mask=lung_mask)
        if lung_mask is not None and mask_method:
            prep.segmentation_method = mask_method
        method = prep.segmentation_method
    else:
        prep = preprocess(radiograph, spec)
        method = "none"
        if lung_mask is None:
            lung_mask, mask_method = _display_lungs(radiograph.pixels, spec, prep.warnings)
        if lung_mask is not None:
            prep.lung_mask, method = np.asarray(lung_mask, dtype=bool), mask_method or "given"
    thumbs = {name: thumbnail(a, STAGE_THUMB) for name, a in prep.stages().items()}
    return PipelineResult(radiograph, prep, thumbs, method)


def _display_lungs(pixels: np.ndarray, spec: Any, warnings: list[str]) -> tuple[np.ndarray | None, str | None]:
    """The lungs for display and ranking when the model's own preprocessing does not segment."""
    from cxr_studio.core.lungs import segment_lungs_detailed

    try:
        seg = segment_lungs_detailed(pixels, "auto", atlas=spec.atlas_dir)
    except (ValueError, OSError, RuntimeError) as e:
        warnings.append(f"No lung outline: the lungs could not be segmented ({e}).")
        return None, None
    warnings.extend(seg.warnings)
    if not seg.mask.any():
        warnings.append("No lung outline: the segmentation found no lung.")
        return None, None
    return seg.mask, seg.method


def load_model(manager: Any, path: str | os.PathLike) -> tuple[str, Any]:
    """Load a checkpoint through the model manager; returns (model id, LoadedCheckpoint)."""
    mid = manager.load(path)
    return mid, manager.models[mid]


def untrained_demo_checkpoint(folder: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Save a randomly initialised narrow cxrnet (the demo stand-in until a trained demo model is
    shipped) as a checkpoint; its provenance says it is untrained."""
    import torch

    from cxr_studio.core.models.checkpoint import save_checkpoint
    from cxr_studio.core.models import build_model

    torch.manual_seed(seed)
    kwargs = {"width": 0.25, "fc_width": 256}
    model = build_model("cxrnet", **kwargs)
    folder = Path(folder or tempfile.mkdtemp(prefix="cxr-studio-demo-"))
    path = folder / "cxrnet-untrained.pt"
    save_checkpoint(path, model, arch="cxrnet", arch_kwargs=kwargs,
                    class_names=list(getattr(model, "class_names", ["normal", "abnormal"])),
                    preprocess=dict(model.default_preprocess),
                    provenance={"recipe": "untrained (random initialisation)", "untrained": True, "seed": seed})
    return path


def forward(loaded: Any, prep: Any, cancel: Any = None) -> Any:
    """The forward pass with every layer's activation (core.views.compute_forward). With ``cancel``
    (a threading.Event) every layer checks it first and the pass stops with `Cancelled` once set."""
    from cxr_studio.core.inspect.views import compute_forward

    if cancel is None:
        return compute_forward(loaded, prep)
    from cxr_studio.core.cancel import Cancelled

    def check(_module: Any, _inputs: Any) -> None:
        if cancel.is_set():
            raise Cancelled("forward pass cancelled")

    model = getattr(loaded, "model", loaded)
    hooks = [m.register_forward_pre_hook(check) for m in model.modules() if not list(m.children())]
    try:
        check(model, None)
        return compute_forward(loaded, prep)
    finally:
        for h in hooks:
            h.remove()


def layer_list(loaded: Any, input_size: int) -> list[Any]:
    from cxr_studio.core.inspect.activations import list_layers

    return list_layers(loaded.model, input_size)


def placement(model: Any, layer: str) -> Any:
    """Receptive-field placement of a layer's grid (None when it cannot be told)."""
    from cxr_studio.core.models.placement import layer_placement

    return layer_placement(model, layer)


def rank(act: np.ndarray, method: str, geometry: Any, lung_mask: Any, region: Any,
         placement: Any = None) -> list[tuple[int, float]]:
    from cxr_studio.core.inspect.activations import rank_channels

    return rank_channels(act, method, geometry=geometry, lung_mask=lung_mask, region=region, placement=placement)


def channel_thumbnails(act: np.ndarray, scale: str, colormap: str = "jet", side: int = THUMB) -> np.ndarray:
    """Every channel of a (C, h, w) activation as a (C, side, side, 4) RGBA uint8 stack."""
    from cxr_studio.core.render import apply_lut, colormap_lut
    from cxr_studio.core.inspect.saliency import channel_map

    a = np.asarray(act, dtype=np.float32)
    lut = colormap_lut(colormap)
    out = np.empty((a.shape[0], side, side, 4), np.uint8)
    for c in range(a.shape[0]):
        m = channel_map(a, c, scale)
        out[c] = apply_lut(_resize(m, side, side), lut)
    return out


def heatmap(loaded: Any, prep: Any, fwd: Any, layer: str, channel: Any, method: str, class_index: Any,
            scale: str, ranking: str, region: Any, partial: Any = None, cancel: Any = None,
            progress: Any = None) -> Any:
    """core.views.compute_heatmap: the one implementation shared with batch export (slow methods:
    ``progress(fraction, text)``, ``cancel`` and ``partial`` maps as the worker hands them)."""
    from cxr_studio.core.inspect.views import compute_heatmap

    steps = (lambda done, total: progress(done / max(total, 1), f"{done}/{total}")) if progress else None
    return compute_heatmap(loaded, prep, fwd, layer, channel, method, class_index, scale, ranking, region,
                           progress=steps, cancel=cancel, partial=partial)


def conv1_tiles(loaded: Any) -> np.ndarray:
    from cxr_studio.core.inspect.features import conv1_mosaic

    return conv1_mosaic(loaded.model)


def activation_maximisation(loaded: Any, layer: str, channel: int | None, class_index: int | None,
                            cancel: Any = None, progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    from cxr_studio.core.inspect.features import activation_maximisation as am

    kw: dict[str, Any] = {"channel": channel}
    if class_index is not None:
        kw["class_index"] = class_index
    return am(loaded.model, layer, progress=progress, cancel=cancel, **kw)


def map_to_original(map_input: np.ndarray, geometry: Any) -> np.ndarray:
    return geometry.map_to_original(map_input)


def export_overlay(stem: str | os.PathLike, pixels: np.ndarray, map_input: np.ndarray, geometry: Any,
                   settings: dict[str, Any], overwrite: bool = False) -> Any:
    """Map the shown heatmap onto the original grid and write PNG + NPY + JSON (core.export)."""
    from cxr_studio.core.render.export import export_view

    return export_view(stem, pixels, geometry.map_to_original(map_input), settings, overwrite=overwrite)


def write_rgb_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3|4) uint8 RGB(A) image (or a gray one) atomically: the one PNG writer."""
    from cxr_studio.core.imaging.png import write_png

    return write_png(path, rgb)


def channel_grid_image(thumbs: np.ndarray, order: list[int] | None = None, cols: int = 16, gap: int = 2) -> np.ndarray:
    """The channel grid (C, t, t, 4) as one RGBA mosaic in display order."""
    t = thumbs if order is None else thumbs[np.asarray(order, dtype=int)]
    n, h, w = t.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 4), np.uint8)
    out[..., 3] = 255
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = t[i]
    return out


@dataclass
class CompareRow:
    model_id: str
    layer: str
    channel: int | None
    activation: np.ndarray  # (h, w) 0..1 strongest channel of the deepest conv, model-input grid
    gradcam: np.ndarray  # (N, N) 0..1
    crop_box: tuple[int, int, int, int]
    probabilities: np.ndarray
    valid: np.ndarray | None = None  # (N, N) bool: where the layer's maps have a value


def compare_row(model_id: str, loaded: Any, prep: Any, fwd: Any, ranking: str, region: Any, class_index: int,
                scale: str) -> CompareRow:
    """One row of the compare view: the deepest conv's strongest channel and its Grad-CAM."""
    from cxr_studio.core.models.layers import deepest_conv
    from cxr_studio.core.inspect.views import compute_heatmap

    layer = deepest_conv(loaded.model)
    if (ranking == "region" and region is None) or (ranking == "lungs" and prep.lung_mask is None):
        ranking = "max"
    act = compute_heatmap(loaded, prep, fwd, layer, "strongest", "activation", class_index, scale, ranking, region)
    cam = compute_heatmap(loaded, prep, fwd, layer, "strongest", "gradcam", class_index, scale, ranking, region)
    return CompareRow(model_id, layer, act.channel, act.map_input, cam.map_input, act.crop_box,
                      np.asarray(fwd.probabilities), act.valid)  # valid: where the layer's maps have a value
