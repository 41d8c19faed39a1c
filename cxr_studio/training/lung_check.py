"""``cxr-studio-train lung-check``: the paper's visual claim, measured (issue 4).

On abnormal images, does the strongest channel of the deepest conv layer (ranked by max, as the
paper picked it) peak inside the lungs? Its peak is placed at the receptive-field centre of the
strongest cell (`demo_check.aligned_peak`, as the demo model's pointing game does) and mapped back
onto the original radiograph; hit = inside the lung mask (the dataset's own mask when it has one,
else ``segment_lungs(method="auto")``), optionally dilated. Grad-CAM for class 1 is scored the same way.

Chance baselines, per image, then averaged: ``chance_fov`` = the fraction of the model's field of
view (the crop box on the original) that is lung, what a uniformly random peak would hit;
``chance_cells`` = the fraction of the layer's cells whose receptive-field centre is lung (a
random strongest *cell*: stricter, since the cells of an unpadded net cover only the input's middle).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
import torch

from .cli import Runner, checkpoint_and_images_args, subcommand
from .data import DatasetError, Sample, read_split, scan_roots, select, write_json_atomic
from .lung_check_scoring import check_image, untrained_twin
from ..core.models.checkpoint import load_checkpoint
from ..core.models import deepest_conv
from .demo_check import receptive_field
from .fit import pick_device
from .lung_check_figures import figure_name, strongest_channel_heatmap, write_figure
from .shipped_defaults import resolve_model_and_split


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))


def rate(rows: list[dict[str, Any]], key: str) -> float | None:
    """Fraction of ``rows`` whose ``key`` is true (None for no rows)."""
    return sum(bool(r[key]) for r in rows) / len(rows) if rows else None


def choose_samples(roots: list[str], split_file: str | None, use_all: bool, part: str,
                   checkpoint: Path) -> tuple[list[Sample], str]:
    """The abnormal samples to score and a description of where they come from (as ``eval`` picks:
    the split beside the checkpoint when neither ``split_file`` nor ``use_all`` is given)."""
    samples = scan_roots(list(roots))
    if split_file is None and not use_all and (checkpoint.parent / "split.json").exists():
        split_file = str(checkpoint.parent / "split.json")
    if use_all or split_file is None:
        chosen, source = samples, "all"
    else:
        chosen, source = select(samples, read_split(split_file, samples)[part]), f"{split_file}:{part}"
    abnormal = [s for s in chosen if s.label == 1]
    if not abnormal:
        raise DatasetError(f"no abnormal (label 1) images among the {len(chosen)} selected ({source})")
    return abnormal, source


def lung_check(checkpoint: str | Path, roots: list[str], *, split_file: str | None = None, use_all: bool = False,
               part: str = "test", layer: str | None = None, dilation_px: int = 0, json_out: str | None = None,
               figures: str | None = None, max_figures: int = 12, device: str | None = None,
               progress: bool = False, untrained_control: bool = False) -> dict[str, Any]:
    """Score every selected abnormal image; write the JSON and figures; return the summary + rows.
    ``untrained_control`` also scores the same images with `untrained_twin` (the recipe's seed)."""
    if dilation_px < 0:
        raise DatasetError(f"--dilation-px must be 0 or more, got {dilation_px}")
    ck = load_checkpoint(Path(checkpoint), device=pick_device(device))
    model, spec = ck.model, ck.spec
    recipe = (ck.provenance or {}).get("recipe", {}) if isinstance(ck.provenance, dict) else {}
    use_masks = bool(recipe.get("use_dataset_masks", True))
    layer = layer or deepest_conv(model)
    if layer not in getattr(model, "layer_names", {}):
        raise DatasetError(f"the model has no layer {layer!r}; its layers: {', '.join(model.layer_names)}")
    rf = receptive_field(model, layer)
    seed = int(recipe.get("seed", 0))
    twin = untrained_twin(ck, seed) if untrained_control else None
    samples, source = choose_samples(roots, split_file, use_all, part, Path(checkpoint))
    it: Any = samples
    if progress:
        it = tqdm(samples, desc="lung-check", unit="img", leave=False)
    rows = []
    for i, s in enumerate(it):
        row, fig = check_image(model, spec, layer, rf, s, use_masks, dilation_px)
        if figures and i < max_figures:
            heat = strongest_channel_heatmap(model, fig["pre"], fig["forward"], layer)
            if heat.channel != row["channel"]:  # one ranking, two call sites: they must agree
                raise RuntimeError(f"channel mismatch {heat.channel} != {row['channel']} on {s.path}")
            path = Path(figures) / figure_name(s.path, row["channel"])
            row["figure"] = str(write_figure(path, fig["pre"], heat.map_original, fig["lungs"], fig["peak"]))
        if twin is not None:
            ctl, _ = check_image(twin, spec, layer, rf, s, use_masks, dilation_px)
            row.update(control_channel=ctl["channel"], control_hit=ctl["hit"], control_cam_hit=ctl["cam_hit"])
        rows.append(row)
    n = len(rows)
    k = sum(r["hit"] for r in rows)
    called = [r for r in rows if r["prob_abnormal"] >= 0.5]  # the images the model gets right
    summary = {
        "checkpoint": str(checkpoint), "checkpoint_sha256": getattr(ck, "sha256", ""), "images": source,
        "layer": layer, "receptive_field": {"stride": rf[0], "offset": rf[1]}, "dilation_px": dilation_px,
        "n_abnormal": n, "channel_hit_rate": k / n, "channel_hit_rate_ci95": wilson(k, n),
        "gradcam_hit_rate": sum(r["cam_hit"] for r in rows) / n,
        "n_called_abnormal": len(called), "channel_hit_rate_called_abnormal": rate(called, "hit"),
        "gradcam_hit_rate_called_abnormal": rate(called, "cam_hit"),
        "chance_fov": float(np.mean([r["lung_fraction"] for r in rows])),
        "chance_cells": float(np.mean([r["lung_fraction_cells"] for r in rows])),
        "top_channels": Counter(r["channel"] for r in rows).most_common(5),
        "mask_sources": dict(Counter(r["mask_source"] for r in rows)),
        "figures": sum("figure" in r for r in rows),
    }
    if twin is not None:
        kc = sum(r["control_hit"] for r in rows)
        summary["untrained_control"] = {
            "seed": seed, "channel_hit_rate": kc / n, "channel_hit_rate_ci95": wilson(kc, n),
            "gradcam_hit_rate": rate(rows, "control_cam_hit"),
            "top_channels": Counter(r["control_channel"] for r in rows).most_common(5)}
    out = {"summary": summary, "images_scored": rows}
    if json_out:
        write_json_atomic(Path(json_out), out)
    return out


def format_table(s: dict[str, Any]) -> str:
    """The printed summary."""
    lo, hi = s["channel_hit_rate_ci95"]
    rf = s["receptive_field"]
    lines = [
        f"lung-check {s['checkpoint']} on {s['images']}",
        f"layer {s['layer']} (cells every {rf['stride']:g} px from {rf['offset']:g}), lung mask dilation {s['dilation_px']} px",
        f"  abnormal images            {s['n_abnormal']}",
        f"  strongest-channel hit rate {s['channel_hit_rate']:.3f}  (95% CI {lo:.3f}-{hi:.3f})",
        f"  Grad-CAM hit rate          {s['gradcam_hit_rate']:.3f}",
        f"  ... on the {s['n_called_abnormal']} called abnormal (p >= 0.5): channel "
        + " / Grad-CAM ".join("-" if v is None else f"{v:.3f}" for v in
                              (s["channel_hit_rate_called_abnormal"], s["gradcam_hit_rate_called_abnormal"])),
        f"  chance (field of view)     {s['chance_fov']:.3f}",
        f"  chance (layer cells)       {s['chance_cells']:.3f}",
        "  strongest channels         " + ", ".join(f"{c} ({m}x)" for c, m in s["top_channels"]),
        "  lung masks                 " + ", ".join(f"{k} {v}" for k, v in s["mask_sources"].items()),
    ]
    c = s.get("untrained_control")
    if c:
        lines += [f"  untrained control (seed {c['seed']}): channel hit rate {c['channel_hit_rate']:.3f}, Grad-CAM "
                  f"{c['gradcam_hit_rate']:.3f}; channels " + ", ".join(f"{ch} ({m}x)" for ch, m in c["top_channels"])]
    return "\n".join(lines)


@subcommand("lung-check", "the paper's visual claim: does the strongest deepest-conv channel peak inside the lungs?")
def _lung_check_setup(p: argparse.ArgumentParser) -> Runner:
    checkpoint_and_images_args(p, "score", "abnormal ")
    p.add_argument("--layer", default=None, help="readable layer name (default: the deepest conv, e.g. relu5)")
    p.add_argument("--dilation-px", type=int, default=0, help="grow the lung mask by this many pixels")
    p.add_argument("--json", default=None, help="write the summary and per-image rows here")
    p.add_argument("--figures", default=None, metavar="DIR", help="write Fig. 4-style PNGs here")
    p.add_argument("--max-figures", type=int, default=12)
    p.add_argument("--untrained-control", action="store_true",
                   help="also score the same architecture untrained (the recipe's seed: the net before training)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")

    def run(a: argparse.Namespace) -> int:
        if a.threads:
            torch.set_num_threads(a.threads)
        resolve_model_and_split(a)
        res = lung_check(a.checkpoint, a.data, split_file=a.split_file, use_all=a.all, part=a.part, layer=a.layer,
                         dilation_px=a.dilation_px, json_out=a.json, figures=a.figures, max_figures=a.max_figures,
                         device=a.device, progress=not a.no_progress and sys.stderr.isatty(),
                         untrained_control=a.untrained_control)
        print(format_table(res["summary"]))
        if a.json:
            print(f"per-image rows: {a.json}")
        return 0

    return run
