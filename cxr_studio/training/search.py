"""Randomized hyper-parameter search (Bergstra & Bengio 2012): each trial is a ``fit`` with
sampled lr (log-uniform), momentum, L2 (log-uniform), dropout and batch size, on one shared split.
Writes ``results.json``, ``results.md`` (sorted by validation score) and ``best.toml``."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from .data import write_json_atomic
from .recipes import Recipe
from .fit import fit

SEARCH_SPACE: dict[str, tuple] = {
    "lr": ("loguniform", 1e-4, 3e-2),
    "momentum": ("uniform", 0.8, 0.99),
    "weight_decay": ("loguniform", 1e-5, 1e-2),
    "dropout": ("uniform", 0.2, 0.7),
    "batch_size": ("choice", 16, 32, 64),
}


def sample_config(rng: np.random.Generator, space: dict[str, tuple] | None = None) -> dict[str, Any]:
    """One draw from the search space (plain Python values)."""
    out: dict[str, Any] = {}
    for key, (kind, *args) in (space or SEARCH_SPACE).items():
        if kind == "loguniform":
            out[key] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
        elif kind == "uniform":
            out[key] = float(rng.uniform(args[0], args[1]))
        elif kind == "choice":
            out[key] = type(args[0])(args[int(rng.integers(len(args)))])
        else:
            raise ValueError(f"unknown search distribution {kind!r}")
    return out


def _table(rows: list[dict], metric: str) -> str:
    keys = list(SEARCH_SPACE)
    head = "| rank | trial | " + " | ".join(keys) + f" | {metric} | best epoch |"
    lines = [head, "|" + "---|" * (len(keys) + 4)]
    for i, r in enumerate(rows, 1):
        vals = " | ".join(f"{r['config'][k]:.3g}" if isinstance(r["config"][k], float) else str(r["config"][k])
                          for k in keys)
        lines.append(f"| {i} | {r['trial']} | {vals} | {r['score']:.4f} | {r['best_epoch']} |")
    return "\n".join(lines)


def random_search(
    base: Recipe,
    roots: list[str | Path],
    out: str | Path,
    *,
    trials: int,
    epochs: int | None = None,
    seed: int = 0,
    device: str | None = None,
    space: dict[str, tuple] | None = None,
    preprocess_fn: Any = None,
) -> dict[str, Any]:
    """Run ``trials`` fits; returns rows sorted by validation score, the table and best.toml path."""
    if trials < 1:
        raise ValueError(f"--trials must be at least 1, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    metric = base.select_metric
    rows: list[dict] = []
    split_file: Path | None = None
    for t in range(trials):
        cfg = sample_config(rng, space)
        changes = dict(cfg)
        if epochs:
            changes["epochs"] = int(epochs)
        recipe = dataclasses.replace(base, **changes)
        recipe.validate()
        run = out / f"trial_{t:02d}"
        summary = fit(recipe, roots, run, device=device, split_file=split_file, progress=False,
                      preprocess_fn=preprocess_fn)
        split_file = split_file or run / "split.json"
        best = summary.get("best") or {}
        score = float(best.get(metric, float("nan")))
        rows.append({"trial": t, "config": cfg, "score": score if math.isfinite(score) else -math.inf,
                     "best_epoch": best.get("epoch"), "run": str(run), "recipe": recipe.to_dict()})
    rows.sort(key=lambda r: -r["score"] if metric != "val_loss" else r["score"])
    table = _table(rows, metric)
    best_recipe = Recipe(**rows[0]["recipe"])
    best_recipe = dataclasses.replace(best_recipe, epochs=base.epochs, name=f"{base.name}-searched",
                                      description=f"{base.name} with the best of {trials} random-search trials")
    best_toml = out / "best.toml"
    tmp = best_toml.with_name("best.toml.tmp")
    tmp.write_text(best_recipe.to_toml(), encoding="utf-8")
    tmp.replace(best_toml)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    write_json_atomic(out / "results.json", {"metric": metric, "rows": rows})
    return {"rows": rows, "table": table, "best_toml": str(best_toml), "best_recipe": best_recipe}
