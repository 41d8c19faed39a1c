"""Summaries for ``cxr-studio-train localize``: per-method scores with intervals (all images and the
ones called abnormal), the baselines, the sanity verdicts, and the printed table."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.inspect.localisation import (
    PRIOR_GRID,
    bootstrap_ci,
    grow,
    population_prior_points,
    summarise,
    to_prior_grid,
    tolerance_for,
    uniform_scores,
)
from ..core.inspect.sanity import PASS_SPEARMAN

CALLED = 0.5  # an image is "called abnormal" from this probability on


def _rows_for(rows: list[dict[str, Any]], method: str, key: str | None = None) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        e = r["methods"][method]
        e = e[key] if key else e
        out.append({"hit": e["hit"], "energy": e["energy"], "iou_curve": np.asarray(e["iou_curve"])})
    return out


def method_summary(rows: list[dict[str, Any]], val_rows: list[dict[str, Any]], method: str,
                   faithfulness: bool) -> dict[str, Any]:
    """One method's scores on all images, plus ``called_abnormal`` and the deletion/insertion AUCs."""
    val = np.stack([np.asarray(r["methods"][method]["iou_curve"]) for r in val_rows]) if val_rows else None
    out = summarise(_rows_for(rows, method), val)
    called = [r for r in rows if r["prob_abnormal"] >= CALLED]
    out["called_abnormal"] = summarise(_rows_for(called, method), val)
    if faithfulness:
        d = [r["methods"][method]["deletion_auc"] for r in rows]
        i = [r["methods"][method]["insertion_auc"] for r in rows]
        out.update(deletion_auc=float(np.mean(d)), deletion_ci=bootstrap_ci(d), insertion_auc=float(np.mean(i)),
                   insertion_ci=bootstrap_ci(i),
                   deletion_auc_random=float(np.mean([r["random_order"]["deletion_auc"] for r in rows])),
                   insertion_auc_random=float(np.mean([r["random_order"]["insertion_auc"] for r in rows])))
    return out


def lesion_baseline_inputs(p: Any, tolerance_px: float) -> dict[str, Any]:
    """What the baselines need of one image, kept small: the uniform scores, the lesion on the
    prior grid, and the grown lesion bit-packed (for the prior point's hit)."""
    grown = grow(p.lesion, tolerance_for(p.lesion.shape, tolerance_px))
    lungs = p.lungs if p.lungs.any() else np.ones_like(p.lesion)
    return {"lungs": uniform_scores(lungs, p.lesion, tolerance_px),
            "image": uniform_scores(np.ones_like(p.lesion), p.lesion, tolerance_px),
            "grid": to_prior_grid(p.lesion), "grown": np.packbits(grown), "shape": p.lesion.shape}


def _point_summary(values: list[float], energy: list[float]) -> dict[str, Any]:
    return {"n": len(values), "pointing_game": float(np.mean(values)), "pointing_ci": bootstrap_ci(values),
            "energy_inside": float(np.mean(energy)), "energy_ci": bootstrap_ci(energy)}


def baselines(rows: list[dict[str, Any]], info: list[dict[str, Any]], tolerance_px: float, methods: list[str],
              untrained: bool) -> dict[str, Any]:
    """uniform_lungs, uniform_image (exact expectations per image), population_prior (leave-one-out
    most lesion-dense point; its energy = the share of the other images' lesion density that falls
    in this lesion) and the untrained twin's scores per method."""
    out: dict[str, Any] = {
        "uniform_lungs": _point_summary([i["lungs"]["hit"] for i in info], [i["lungs"]["energy"] for i in info]),
        "uniform_image": _point_summary([i["image"]["hit"] for i in info], [i["image"]["energy"] for i in info]),
    }
    if len(info) >= 2:
        pts = population_prior_points([i["grid"] for i in info])
        total = np.sum([i["grid"] for i in info], axis=0)
        hits, energy = [], []
        for k, i in enumerate(info):
            h, w = i["shape"]
            grown = np.unpackbits(i["grown"])[: h * w].reshape(h, w).astype(bool)
            x = int(np.clip(np.floor(pts[k][0] * w), 0, w - 1))
            y = int(np.clip(np.floor(pts[k][1] * h), 0, h - 1))
            hits.append(float(grown[y, x]))
            other = total - i["grid"]
            lesion_grid = i["grid"] > 0
            energy.append(float(other[lesion_grid].sum() / other.sum()) if other.sum() > 0 else 0.0)
        r, c = np.unravel_index(int(np.argmax(total)), total.shape)
        out["population_prior"] = {**_point_summary(hits, energy), "grid": PRIOR_GRID,
                                   "point_uv_all": [(c + 0.5) / PRIOR_GRID, (r + 0.5) / PRIOR_GRID]}
    else:
        out["population_prior"] = {"n": len(info), "note": "needs at least two images"}
    if untrained and rows and "untrained" in next(iter(rows[0]["methods"].values())):
        out["untrained"] = {m: summarise(_rows_for(rows, m, "untrained")) for m in methods}
    return out


def sanity_summary(raw: dict[str, Any]) -> dict[str, Any]:
    """Per method: mean Spearman / SSIM at the explained layer's cascade step over the sanity
    images, the verdict, and the mean curves of both randomisations."""
    out: dict[str, Any] = {}
    for m, results in (raw.get("per_method") or {}).items():
        if not results:
            continue
        sp = float(np.mean([r["spearman_randomised"] for r in results]))
        out[m] = {"spearman_randomised": sp, "ssim_randomised": float(np.mean([r["ssim_randomised"] for r in results])),
                  "passes": bool(sp < PASS_SPEARMAN), "n_images": len(results),
                  "explained_layer": results[0]["explained_layer"]}
        for kind in ("cascade", "independent"):
            out[m][kind] = [{"layer": step["layer"],
                             "spearman": float(np.mean([r[kind][j]["spearman"] for r in results])),
                             "ssim": float(np.mean([r[kind][j]["ssim"] for r in results]))}
                            for j, step in enumerate(results[0][kind])]
    return out


def reach_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the scored images: the mean share of the lesion (and of the lungs) inside the layer
    methods' reach, and how many lesions lie wholly outside it (``n_unreachable``: not even the
    tolerance brings them in, so no layer method can score a hit on them)."""
    share = [r["lesion_in_reach"] for r in rows]
    lungs = [r["lungs_in_reach"] for r in rows if r.get("lungs_in_reach") is not None
             and np.isfinite(r["lungs_in_reach"])]
    return {"lesion_share": float(np.mean(share)), "lungs_share": float(np.mean(lungs)) if lungs else None,
            "n_wholly_outside": int(sum(v == 0 for v in share)),
            "n_unreachable": int(sum(not r["lesion_reachable"] for r in rows))}


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(r: dict[str, Any]) -> str:
    """The printed summary: methods x metrics with intervals, baselines, sanity verdicts."""
    lines = [f"localize {r['checkpoint']} on {r['images']}: {r['n_images']} abnormal images with lesions "
             f"({r['n_called_abnormal']} called abnormal), layer {r['layer']}, tolerance {r['tolerance_px']} px at 512",
             f"{'method':22s} {'pointing (95% CI)':22s} {'energy':7s} {'mIoU':6s} {'del':6s} {'ins':6s} "
             f"{'sanity':7s} s/img"]
    for m, s in r["methods"].items():
        ci = s.get("pointing_ci") or [None, None]
        san = r["sanity"].get(m)
        verdict = "-" if san is None else ("pass" if san["passes"] else "FAIL")
        lines.append(f"{m:22s} {_fmt(s.get('pointing_game'))} ({_fmt(ci[0])}-{_fmt(ci[1])})  "
                     f"{_fmt(s.get('energy_inside')):7s} {_fmt(s.get('miou')):6s} {_fmt(s.get('deletion_auc')):6s} "
                     f"{_fmt(s.get('insertion_auc')):6s} {verdict:7s} {s['seconds_per_image']:.2f}")
    b = r["baselines"]
    for name in ("uniform_lungs", "uniform_image", "population_prior"):
        s = b.get(name, {})
        if "pointing_game" in s:
            lines.append(f"baseline {name:13s} {_fmt(s['pointing_game'])} ({_fmt(s['pointing_ci'][0])}-"
                         f"{_fmt(s['pointing_ci'][1])})  energy {_fmt(s['energy_inside'])}")
    for m, s in (b.get("untrained") or {}).items():
        lines.append(f"untrained {m:21s} {_fmt(s.get('pointing_game'))}  energy {_fmt(s.get('energy_inside'))}")
    if r.get("reach"):
        rc = r["reach"]
        lines.append(f"reach of {r['layer']}'s maps: {_fmt(rc['lesion_share'])} of the lesion area, "
                     f"{_fmt(rc['lungs_share'])} of the lungs; {rc['n_unreachable']} lesions out of reach")
    if "random_order" in r:
        ro = r["random_order"]
        lines.append(f"random order: deletion {_fmt(ro['deletion_auc'])} insertion {_fmt(ro['insertion_auc'])}")
    return "\n".join(lines)
