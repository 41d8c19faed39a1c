"""Per-image work of ``cxr-studio-train localize`` (see `localize`): read one abnormal radiograph and
its lesion mask, compute every method's map with the checkpoint's model (and its untrained twin),
score each map against the lesion, and run the deletion/insertion curves."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import DatasetError, Sample, read_radiograph
from ..core.imaging.lesions import find_lesion_mask, lesion_from_json
from ..core.lungs import segment_lungs_detailed
from ..core.pipeline import preprocess
from .lung_check_scoring import dataset_lungs
from ..core.inspect.saliency_methods import map_support, saliency_map
from ..core.inspect.activations import forward_with_activations
from ..core.inspect.faithfulness import blurred, curves, random_order, saliency_order
from ..core.inspect.localisation import grow, score_map, share_in_reach, tolerance_for

ABNORMAL = 1  # the class every map explains


@dataclass
class Context:
    """What every image needs: the models, the layer explained, the settings."""

    model: Any
    spec: Any
    layer: str
    methods: list[str]
    tolerance_px: float
    options: Any
    use_masks: bool = True
    twin: Any = None
    faithfulness: bool = True
    faithfulness_steps: int = 16  # shares of the pixels deleted / inserted (steps + 1 forward passes each)
    lesion_source: str = "auto"
    seconds: dict[str, float] = field(default_factory=dict)  # method -> total seconds (trained model)
    support: np.ndarray | None = None  # (N, N) bool, where the layer's maps can be non-zero: the same on every image


@dataclass
class Prepared:
    sample: Sample
    pre: Any
    lungs: np.ndarray
    lung_source: str
    lesion: np.ndarray
    lesion_source: str


def lesion_for(sample: Sample, shape: tuple[int, int], source: str = "auto") -> tuple[np.ndarray | None, str]:
    """The sample's lesion mask at ``shape`` ("auto": the mask PNG, else the release JSON; "json":
    the JSON only) and where it came from."""
    if source == "json":
        m = lesion_from_json(sample.path, shape)
        return m, "via-json" if m is not None else "none"
    return find_lesion_mask(sample.path, shape)


def prepare(ctx: Context, sample: Sample) -> Prepared | None:
    """Read and preprocess one image; None when it has no (or an empty) lesion mask."""
    try:
        rad = read_radiograph(sample.path)
        lesion, lsrc = lesion_for(sample, rad.shape, ctx.lesion_source)
        if lesion is None or not lesion.any():
            return None
        ds_mask = dataset_lungs(sample, rad.shape)
        pre = preprocess(rad, ctx.spec, lung_mask=ds_mask if ctx.use_masks else None)
    except DatasetError:
        raise
    except ValueError as exc:
        raise DatasetError(f"cannot read or preprocess {sample.path}: {exc}") from None
    if ds_mask is not None:
        lungs, src = ds_mask, "dataset"
    elif pre.lung_mask is not None:
        lungs, src = pre.lung_mask, f"segment_lungs:{pre.segmentation_method}"
    else:
        seg = segment_lungs_detailed(rad.pixels, method="auto")
        lungs, src = seg.mask, f"segment_lungs:{seg.method}"
    return Prepared(sample, pre, np.asarray(lungs, bool), src, lesion, lsrc)


def method_map(model: Any, ctx: Context, p: Prepared, method: str) -> Any:
    """One method's `Saliency` for the prepared image."""
    x = p.pre.tensor(next(model.parameters()).device)
    return saliency_map(model, x, method, ctx.layer, ABNORMAL, geometry=p.pre.geometry, lung_mask=p.lungs,
                        options=ctx.options)


def score_image(ctx: Context, p: Prepared, keep_maps: bool = False,
                val_only: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON row, maps on the original image when ``keep_maps``). ``val_only``: IoU curves only
    (for choosing the threshold), no faithfulness or twin."""
    model = ctx.model
    x = p.pre.tensor(next(model.parameters()).device)
    prob = float(forward_with_activations(model, x, []).probabilities[ABNORMAL])
    row: dict[str, Any] = {"id": p.sample.id, "path": str(p.sample.path), "prob_abnormal": prob,
                           "lesion_source": p.lesion_source, "lung_source": p.lung_source,
                           "lesion_fraction": float(p.lesion.mean()), "methods": {}}
    if not val_only:
        row.update(reach(ctx, p, x))
    maps: dict[str, np.ndarray] = {}
    base = blurred(x) if ctx.faithfulness and not val_only else None
    n_pix = int(x.shape[-1] * x.shape[-2])
    for method in ctx.methods:
        t0 = time.perf_counter()
        s = method_map(model, ctx, p, method)
        ctx.seconds[method] = ctx.seconds.get(method, 0.0) + time.perf_counter() - t0
        m_orig = p.pre.geometry.map_to_original(s.map_input)
        sc = score_map(m_orig, p.lesion, ctx.tolerance_px)
        entry: dict[str, Any] = {"hit": sc["hit"], "energy": sc["energy"], "iou_curve": sc["iou_curve"].tolist()}
        if s.channel is not None:
            entry["channel"] = s.channel
        if not val_only:
            r, c = np.unravel_index(int(np.argmax(m_orig)), m_orig.shape)
            entry["peak_xy"] = [int(c), int(r)]
            if base is not None:
                cv = curves(model, x, saliency_order(s.map_input), ABNORMAL, ctx.faithfulness_steps, base)
                entry.update(deletion_auc=cv["deletion_auc"], insertion_auc=cv["insertion_auc"])
            if ctx.twin is not None:
                ts = score_map(p.pre.geometry.map_to_original(method_map(ctx.twin, ctx, p, method).map_input),
                               p.lesion, ctx.tolerance_px)
                entry["untrained"] = {"hit": ts["hit"], "energy": ts["energy"], "iou_curve": ts["iou_curve"].tolist()}
        if keep_maps:
            maps[method] = m_orig
        row["methods"][method] = entry
    if base is not None:
        cv = curves(model, x, random_order(n_pix, seed=0), ABNORMAL, ctx.faithfulness_steps, base)
        row["random_order"] = {"deletion_auc": cv["deletion_auc"], "insertion_auc": cv["insertion_auc"]}
    return row, maps


def reach(ctx: Context, p: Prepared, x: Any) -> dict[str, Any]:
    """How much of the lesion (and of the lungs) the explained layer's map can reach on this image:
    its cells' centres cover the middle of the input only (cxrnet's relu5: input pixels 33-193 of
    227), so a lesion at the crop's border cannot hold the peak of any layer method."""
    if ctx.support is None:  # one forward pass for the run: it depends on the layer and the input size only
        ctx.support = map_support(ctx.model, x, "gradcam", ctx.layer)  # any layer method: they share their cells
    on_image = p.pre.geometry.map_to_original(ctx.support.astype(np.float32)) > 0.5
    grown = grow(p.lesion, tolerance_for(p.lesion.shape, ctx.tolerance_px))  # what the pointing game counts as a hit
    lungs = share_in_reach(p.lungs, on_image)[0] if p.lungs.any() else float("nan")
    return {"lesion_in_reach": share_in_reach(p.lesion, on_image)[0],
            "lesion_reachable": share_in_reach(grown, on_image)[1], "lungs_in_reach": lungs}
