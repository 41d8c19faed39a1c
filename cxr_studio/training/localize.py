"""``cxr-studio-train localize``: does the heatmap point at the disease? (issue 14)

For every abnormal image with a lesion mask (``lesion_mask/<stem>_lesion.png``, the Shenzhen release's
``Annotations_AllinOne_json.json``, or phantoms), each saliency method of
`core.inspect.saliency_methods.METHODS` explains class "abnormal" at the deepest conv (input methods: the
input); its map, placed at the receptive-field centres and mapped onto the radiograph (never clipped
to the lungs), is scored by `core.localisation`: pointing game with a tolerance (pixels at 512,
scaled), energy inside, and mIoU at the threshold chosen on the split's validation images
(CheXlocalize; leave-one-out over the scored images when there is no split), each with a 95 %
bootstrap interval, on all images and on those the model calls abnormal (p >= 0.5). Baselines:
a random point in the lungs / the image, the leave-one-out population prior, the untrained twin.
Faithfulness: deletion / insertion AUC (`core.faithfulness`) against a random order. Sanity:
cascading and independent weight randomisation (`core.sanity`) on the first few images.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
import torch

from .cli import Runner, checkpoint_and_images_args, subcommand
from .data import DatasetError, Sample, read_split, scan_roots, select
from .localize_scoring import Context, method_map, prepare, score_image
from .localize_summary import (baselines, format_table, lesion_baseline_inputs, method_summary, reach_summary,
                               sanity_summary)
from ..core.models.checkpoint import load_checkpoint
from ..core.models import deepest_conv
from ..core.inspect.saliency_cam import LIBRARY_CAMS, _library
from ..core.inspect.saliency_methods import INPUT_METHODS, METHODS, SOURCE, Options, map_support, parse_methods
from .fit import pick_device
from .lung_check_scoring import untrained_twin
from .localize_figures import write_cascade_figure, write_method_rows
from ..core.atomic import write_text_atomic
from ..core.inspect.sanity import sanity_check


def choose(roots: list[str], split_file: str | None, use_all: bool, part: str,
           checkpoint: Path) -> tuple[list[Sample], list[Sample], str]:
    """(abnormal samples to score, abnormal validation samples for the threshold, description);
    as ``eval`` picks: the split beside the checkpoint when neither a split file nor --all is given."""
    samples = scan_roots(list(roots))
    if split_file is None and not use_all and (checkpoint.parent / "split.json").exists():
        split_file = str(checkpoint.parent / "split.json")
    if use_all or split_file is None:
        chosen, val, source = samples, [], "all"
    else:
        split = read_split(split_file, samples)
        chosen, source = select(samples, split[part]), f"{split_file}:{part}"
        val = select(samples, split["val"]) if part != "val" else []
    abnormal = [s for s in chosen if s.label == 1]
    if not abnormal:
        raise DatasetError(f"no abnormal (label 1) images among the {len(chosen)} selected ({source})")
    return abnormal, [s for s in val if s.label == 1], source


def _clean(o: Any) -> Any:
    """Strict-JSON values: NaN/inf -> None, numpy -> Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def localize(checkpoint: str | Path, roots: list[str], *, split_file: str | None = None, use_all: bool = False,
             part: str = "test", methods: list[str] | None = None, tolerance_px: int = 8, layer: str | None = None,
             json_out: str | None = None, figures: str | None = None, max_figures: int = 8, sanity_images: int = 3,
             faithfulness: bool = True, faithfulness_steps: int = 16, untrained: bool = True,
             limit: int | None = None, val_limit: int | None = None,
             lesion_source: str = "auto", options: Any = None, device: str | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Score, write the JSON (strict) and figures, return the report (with per-image rows)."""
    if tolerance_px < 0:
        raise DatasetError(f"--tolerance-px must be 0 or more, got {tolerance_px}")
    methods = list(methods) if methods else list(SOURCE)
    ck = load_checkpoint(Path(checkpoint), device=pick_device(device))
    recipe = (ck.provenance or {}).get("recipe", {}) if isinstance(ck.provenance, dict) else {}
    layer = layer or deepest_conv(ck.model)
    if layer not in getattr(ck.model, "layer_names", {layer: layer}):
        raise DatasetError(f"the model has no layer {layer!r}; its layers: {', '.join(ck.model.layer_names)}")
    seed = int(recipe.get("seed", 0))
    ctx = Context(ck.model, ck.spec, layer, methods, float(tolerance_px), options or Options(),
                  use_masks=bool(recipe.get("use_dataset_masks", True)),
                  twin=untrained_twin(ck, seed) if untrained else None, faithfulness=faithfulness,
                  faithfulness_steps=int(faithfulness_steps),
                  lesion_source=lesion_source)
    if set(methods) & set(LIBRARY_CAMS):
        _library()  # import pytorch-grad-cam now, so its import time is not charged to the first image
    samples, val_samples, source = choose(roots, split_file, use_all, part, Path(checkpoint))
    val_samples = val_samples[:val_limit] if val_limit is not None else val_samples
    bar = _bar(progress, min(limit or len(samples), len(samples)) + len(val_samples))
    rows, prepared, fig_maps, skipped, lesion_info = [], [], [], 0, []
    t_start = time.perf_counter()
    for s in samples:
        if limit and len(rows) >= limit:
            break
        p = prepare(ctx, s)
        bar(s.path.name)
        if p is None:
            skipped += 1
            continue
        row, maps = score_image(ctx, p, keep_maps=bool(figures) and len(fig_maps) < max_figures)
        if maps:
            fig_maps.append((p, maps))
        rows.append(row)
        lesion_info.append(lesion_baseline_inputs(p, ctx.tolerance_px))
        if len(prepared) < sanity_images:
            prepared.append(p)
    n_scored = len(rows)
    if n_scored == 0:
        raise DatasetError(f"none of the {len(samples)} abnormal images ({source}) has a non-empty lesion mask")
    seconds = {m: ctx.seconds.get(m, 0.0) / n_scored for m in methods}
    val_rows = []
    for s in val_samples:
        p = prepare(ctx, s)
        bar(s.path.name)
        if p is not None:
            val_rows.append(score_image(ctx, p, val_only=True)[0])
    bar(None)
    report: dict[str, Any] = {
        "n_images": n_scored, "tolerance_px": int(tolerance_px),
        "checkpoint": str(checkpoint), "checkpoint_sha256": getattr(ck, "sha256", ""), "images": source,
        "layer": layer, "n_skipped_no_lesion": skipped, "n_validation_images": len(val_rows),
        "n_called_abnormal": sum(r["prob_abnormal"] >= 0.5 for r in rows),
        "methods": {m: {**method_summary(rows, val_rows, m, faithfulness), "source": SOURCE[m],
                        "seconds_per_image": seconds[m]} for m in methods},
        "baselines": baselines(rows, lesion_info, ctx.tolerance_px, methods, untrained),
        "reach": reach_summary(rows),
    }
    if faithfulness:
        rnd = [r["random_order"] for r in rows]
        report["random_order"] = {k: float(np.mean([r[k] for r in rnd])) for k in ("deletion_auc", "insertion_auc")}
    sanity_raw = _sanity(ctx, prepared, methods, seed, progress) if sanity_images > 0 else {}
    report["sanity"] = sanity_summary(sanity_raw)
    report["seconds_total"] = time.perf_counter() - t_start
    if figures:
        report["figures"] = write_method_rows(Path(figures), fig_maps, methods)
        if sanity_raw.get("maps"):
            report["figures"].append(write_cascade_figure(Path(figures), prepared[0], sanity_raw["maps"]))
    report["per_image"] = rows
    report = _clean(report)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(json_out), json.dumps(report, indent=1, allow_nan=False))
    return report


def _sanity(ctx: Context, prepared: list[Any], methods: list[str], seed: int,
            progress: bool = False) -> dict[str, Any]:
    """Randomisation results per method over the first images; the maps of image 0 for the figure."""
    per: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    maps: dict[str, list[tuple[str, np.ndarray]]] = {}
    bar = _bar(progress, len(prepared) * len(methods), "sanity", "map set")
    for i, p in enumerate(prepared):
        for m in methods:
            bar(f"{p.sample.path.name} {m}")
            seen: list[np.ndarray] = []

            def fn(model: Any, m: str = m, seen: list = seen) -> np.ndarray:
                a = method_map(model, ctx, p, m).map_input
                seen.append(a)
                return a

            lay = None if m in INPUT_METHODS else ctx.layer
            support = map_support(ctx.model, p.pre.tensor(next(ctx.model.parameters()).device), m, lay)
            res = sanity_check(ctx.model, fn, lay, seed, support)
            per[m].append(res)
            if i == 0:
                names = ["trained"] + [s["layer"] for s in res["cascade"]]
                maps[m] = list(zip(names, seen[: len(names)]))
    bar(None)
    return {"per_method": per, "maps": maps}


def _bar(enabled: bool, total: int, desc: str = "localize", unit: str = "img") -> Any:
    """A progress callback: call with an image name per step, None at the end."""
    if not enabled:
        return lambda _name: None
    t = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0)

    def step(name: str | None) -> None:
        if name is None:
            t.close()
        else:
            t.set_postfix_str(name, refresh=False)
            t.update(1)

    return step


@subcommand("localize", "does the heatmap point at the disease? lesion-level scores, sanity checks, faithfulness")
def _localize_setup(p: argparse.ArgumentParser) -> Runner:
    checkpoint_and_images_args(p, "score", "abnormal ")
    p.add_argument("--methods", default=None, help=f"comma-separated (default all): {','.join(METHODS)}")
    p.add_argument("--tolerance-px", type=int, default=8, help="pointing-game tolerance in pixels at 512 (scaled)")
    p.add_argument("--layer", default=None, help="layer the layer methods explain (default: the deepest conv)")
    p.add_argument("--json", default=None, help="write the report (strict JSON) here")
    p.add_argument("--figures", default=None, metavar="DIR", help="write overlay rows and the randomisation cascade")
    p.add_argument("--max-figures", type=int, default=8)
    p.add_argument("--sanity-images", type=int, default=3, help="images for the randomisation checks (0: none)")
    p.add_argument("--limit", type=int, default=None, help="stop after N scored images (abnormal, with a lesion mask)")
    p.add_argument("--val-limit", type=int, default=None, help="use at most N validation images for the threshold")
    p.add_argument("--lesion-source", choices=["auto", "json"], default="auto",
                   help="auto: lesion_mask/ PNG, else the release JSON; json: the release JSON only")
    p.add_argument("--no-faithfulness", action="store_true", help="skip the deletion/insertion curves")
    p.add_argument("--faithfulness-steps", type=int, default=16, help="points of the deletion/insertion curves - 1")
    p.add_argument("--no-untrained", action="store_true", help="skip the untrained-twin baseline")
    p.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients steps (Gauss-Legendre)")
    p.add_argument("--occlusion-window", type=int, default=None,
                   help="occlusion square in input pixels (default 1/7 of the input; stride half of it)")
    p.add_argument("--batch-size", type=int, default=32, help="forward passes at once (occlusion, IG)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")

    def run(a: argparse.Namespace) -> int:
        if a.threads:
            torch.set_num_threads(a.threads)
        for flag, v in (("--limit", a.limit), ("--ig-steps", a.ig_steps), ("--batch-size", a.batch_size),
                        ("--occlusion-window", a.occlusion_window), ("--faithfulness-steps", a.faithfulness_steps)):
            if v is not None and v < 1:
                raise DatasetError(f"{flag} must be 1 or more, got {v}")
        res = localize(a.checkpoint, a.data, split_file=a.split_file, use_all=a.all, part=a.part,
                       methods=parse_methods(a.methods), tolerance_px=a.tolerance_px, layer=a.layer, json_out=a.json,
                       figures=a.figures, max_figures=a.max_figures, sanity_images=max(0, a.sanity_images),
                       faithfulness=not a.no_faithfulness, faithfulness_steps=a.faithfulness_steps,
                       untrained=not a.no_untrained, limit=a.limit,
                       val_limit=a.val_limit, lesion_source=a.lesion_source,
                       options=Options(ig_steps=a.ig_steps, batch_size=a.batch_size, scorecam_batch=a.batch_size,
                                       occlusion_window=a.occlusion_window),
                       device=a.device, progress=not a.no_progress)
        print(format_table(res))
        if a.json:
            print(f"report: {a.json}")
        return 0

    return run
