"""``fit``: train a recipe on data roots into a run folder.

Run folder: ``config.toml`` + ``config.json`` (resolved recipe), ``split.json``, ``log.csv`` (one row
per epoch), ``curves.png``, ``best.pt`` (best validation ``select_metric``), ``last.pt`` (adds
optimizer / schedule / epoch / RNG state for ``--resume``), ``test_metrics.json`` + ``roc_test.png``.
Every epoch's randomness is a function of (seed, epoch), so a resumed run repeats an uninterrupted one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from .data import check_both_classes, scan_roots, write_json_atomic
from .ddp import DistInfo, barrier, cleanup, dist_from_env, init_distributed
from .loops import CHANCE_LOSS, PlateauDrops, TrainingError, make_loader, make_optimizer, predict, train_epoch
from .metrics import classification_metrics, roc_curve
from .plots import roc_png, training_curves_png
from .data import select
from .prepare import PreparedData, group_ids, prepare_data
from .tensors import GroupedSampler
from .guidance import setup_guidance
from .recipes import Recipe
from .run_folder import chance_hint, check_run_folder, lock_run, report_split_coverage, unlock_run
from ..core.atomic import remove_stale_temps, strict_json, write_text_atomic
from ..core.versions import versions

LOG_FIELDS = ["epoch", "lr", "train_images", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "val_sensitivity",
              "val_specificity", "epoch_time_s", "best"]


def _say(msg: str, info: DistInfo) -> None:
    if info.is_main:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)


def choose_training_device(preference: str | None, info: DistInfo) -> torch.device:
    """The core engine's device choice; under DDP on CUDA each process takes cuda:LOCAL_RANK."""
    dev = pick_device(preference)
    if info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
    return dev


def pick_device(preference: str | None) -> torch.device:
    """``core.engine.choose_device`` (cuda -> mps -> cpu, or the named one)."""
    try:
        from ..core.runtime.engine import choose_device
    except ImportError:  # the core engine not installed yet: same policy, minimal
        if preference:
            dev = torch.device(preference)
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"device {preference!r} was asked for but no CUDA GPU is available") from None
            return dev
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return choose_device(preference)


def _write_log(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def _score(row: dict, metric: str) -> float:
    v = float(row.get(metric, float("nan")))
    if metric == "val_loss":
        v = -v
    return v if math.isfinite(v) else -math.inf


_MAY_CHANGE_ON_RESUME = ("epochs", "stop_after_last_drop", "description")  # description: prose only


def _check_resume_recipe(run: Path, recipe: Recipe) -> None:
    saved = json.loads((run / "config.json").read_text())
    now = recipe.to_dict()
    defaults = Recipe(name=recipe.name).to_dict()  # a field added since the run started has its default
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in _MAY_CHANGE_ON_RESUME and saved.get(k, defaults.get(k)) != now.get(k))
    if diff:
        raise TrainingError(
            f"--resume: the recipe differs from the one {run} was started with ({', '.join(diff)}); "
            f"resume with the same recipe (only {' and '.join(_MAY_CHANGE_ON_RESUME)} may change) "
            "or use a new --out folder"
        )


def fit(
    recipe: Recipe,
    roots: list[str | Path],
    out: str | Path,
    *,
    resume: bool = False,
    device: str | None = None,
    split_file: str | Path | None = None,
    preprocess_fn: Callable[..., np.ndarray] | None = None,
    progress: bool = True,
    loss_fn: Any = None,
    command: str = "",
) -> dict[str, Any]:
    """Train; returns a summary (best/last epoch metrics, test metrics, paths)."""
    from ..core.models.checkpoint import load_checkpoint, save_checkpoint
    from ..core.models import build_model

    info = dist_from_env()
    dev = choose_training_device(device, info)
    init_distributed(info, dev)
    run = Path(out)
    last_path, best_path = run / "last.pt", run / "best.pt"
    created: list[Path] = []  # what this run wrote; removed again if it fails before its first checkpoint
    run_was_there = run.exists()
    lock = None
    try:
        if resume and not last_path.exists():
            raise TrainingError(f"--resume: no last.pt in {run} to continue from")
        if not resume and last_path.exists():
            raise TrainingError(f"{run} already holds a run (last.pt); pass --resume to continue it or choose a new --out")
        if info.is_main:
            lock = lock_run(run)  # two fits into one --out at once: the second is refused
            check_run_folder(run, resume, split_file)
            if resume:
                _check_resume_recipe(run, recipe)
            remove_stale_temps(run)  # e.g. a .last.pt.*.tmp a SIGKILL left mid-write
        torch.manual_seed(recipe.seed)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            torch.use_deterministic_algorithms(False)

        # rank 0 fills the cache and writes split.json, the others then read them
        data: PreparedData | None = None
        if info.is_main:
            check_both_classes(scan_roots(list(roots)), "the data roots " + ", ".join(str(r) for r in roots))
            reused = split_file or (run / "split.json" if (run / "split.json").exists() else None)
            data = prepare_data(recipe, roots, run, split_file, preprocess_fn, progress=progress, write=False)
            check_both_classes(select(data.samples, data.split["train"]), "the training part of the split")
            if reused is not None:
                report_split_coverage(reused, data, lambda m: _say(m, info))
            # the run starts here: only now does the run folder get its files
            for name, text in (("split.json", strict_json({"seed": recipe.seed, "fractions": list(recipe.split),
                                                             **data.split}, indent=2)),
                               ("config.toml", recipe.to_toml()),
                               ("config.json", strict_json(recipe.to_dict(), indent=2))):
                if name == "split.json" and resume and (run / name).exists():
                    continue
                if not (run / name).exists():
                    created.append(run / name)
                write_text_atomic(run / name, text)
        barrier(info)
        if data is None:
            data = prepare_data(recipe, roots, run, run / "split.json", preprocess_fn, progress=False, write=False)
        _say(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images "
             f"(cache {data.cache.folder}, {data.cache.hits} cached, {data.cache.misses} computed)", info)

        arch_kwargs = recipe.model_kwargs()
        model = build_model(recipe.arch, **arch_kwargs).to(dev)
        n_params = sum(p.numel() for p in model.parameters())
        _say(f"model: {recipe.arch} {arch_kwargs} - {n_params / 1e6:.2f}M parameters on {dev}", info)
        optimizer = make_optimizer(model, recipe)
        guidance = setup_guidance(recipe, model, optimizer, dev, data, progress=progress and info.is_main)
        if guidance is not None:
            _say(f"lesion guidance: {guidance.form} x {recipe.lesion_weight:g} at {guidance.layer}; "
                 f"{data.train.n_with_lesion} of {len(data.train)} training images have a lesion mask{guidance.note}",
                 info)
        sched = PlateauDrops(optimizer, recipe.lr_drop_factor, recipe.lr_patience, recipe.max_lr_drops)
        use_amp = recipe.amp and dev.type == "cuda"
        fp16 = use_amp and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=fp16) if dev.type == "cuda" else None
        history: list[dict] = []
        best_score, start_epoch, chance_epochs = -math.inf, 1, 0

        if resume:
            ck = load_checkpoint(last_path, device=dev)
            model.load_state_dict(ck.model.state_dict())
            st = ck.training_state or {}
            optimizer.load_state_dict(st["optimizer"])
            if guidance is not None:
                guidance.load_state_dict(st.get("guidance"))
            sched.load_state_dict(st["scheduler"])
            if scaler is not None and st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            history = list(st.get("history", []))
            best_score = float(st.get("best_score", -math.inf))
            chance_epochs = int(st.get("chance_epochs", 0))
            start_epoch = int(st["epoch"]) + 1
            _say(f"resuming {run} after epoch {st['epoch']}", info)

        net: torch.nn.Module = model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        sampler: Any
        if recipe.pair_batches and not info.enabled:
            sampler = GroupedSampler(group_ids(select(data.samples, data.split["train"])), seed=recipe.seed)
        else:
            sampler = DistributedSampler(data.train, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                         seed=recipe.seed)
        loader = make_loader(data.train, recipe.batch_size, sampler, recipe.workers)
        provenance_base = {
            "recipe": recipe.to_dict(), "recipe_name": recipe.name, "seed": recipe.seed,
            "data_manifest_hash": data.manifest, "data_roots": [str(r) for r in roots],
            "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
            "versions": versions(), "command": command, "world_size": info.world_size,
        }

        def save(path: Path, row: dict, with_state: bool) -> None:
            state = None
            if with_state:
                state = {
                    "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(), "epoch": row["epoch"],
                    "rng": torch.get_rng_state(), "history": history, "best_score": best_score,
                    "chance_epochs": chance_epochs, "scaler": scaler.state_dict() if scaler is not None else {},
                }
                if guidance is not None:  # the seg head's weights: resume only, never in the model
                    state["guidance"] = guidance.state_dict()
            prov = dict(provenance_base, epoch=row["epoch"], metrics={k: v for k, v in row.items() if k != "best"})
            save_checkpoint(path, model, arch=recipe.arch, arch_kwargs=arch_kwargs,
                            class_names=["normal", "abnormal"], preprocess=recipe.spec, provenance=prov,
                            training_state=state)

        for epoch in range(start_epoch, recipe.epochs + 1):
            t0 = time.perf_counter()
            torch.manual_seed(recipe.seed * 100003 + epoch)  # dropout etc.: same per epoch on resume
            data.train.set_epoch(epoch)
            sampler.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            bar = None
            if progress and info.is_main:
                from tqdm import tqdm

                total = len(sampler) if not recipe.max_steps_per_epoch else min(
                    len(sampler), recipe.max_steps_per_epoch * recipe.batch_size)
                bar = tqdm(total=total, desc=f"epoch {epoch}/{recipe.epochs}", unit="img", leave=False, file=sys.stderr)
            try:
                tr = train_epoch(net, loader, optimizer, dev, amp=use_amp, scaler=scaler, info=info,
                                 max_steps=recipe.max_steps_per_epoch, bar=bar, loss_fn=loss_fn, guidance=guidance)
            except (TrainingError, torch.cuda.OutOfMemoryError) as exc:
                why = str(exc) if isinstance(exc, TrainingError) else (
                    f"the GPU ran out of memory with batch_size={recipe.batch_size}; try "
                    f"--set batch_size={max(1, recipe.batch_size // 2)} (with --resume to go on).")
                kept = last_path if last_path.exists() else "none yet"
                raise TrainingError(f"epoch {epoch}: {why} Last good checkpoint: {kept}.") from None
            finally:
                if bar is not None:
                    bar.close()
            if guidance is not None:
                vp, vn = guidance.val_pointing(model)
                _say(f"epoch {epoch}: lesion term ({guidance.form}) {tr['lesion_term']:.4f}, "
                     f"{tr['lesion_images']} guided images; validation Grad-CAM pointing game {vp:.3f} "
                     f"on {vn} images", info)
            labels, probs, vloss = predict(model, data.val, dev, batch_size=max(recipe.batch_size, 32), amp=use_amp)
            vm = classification_metrics(labels, probs) if len(labels) else {}
            row = {
                "epoch": epoch, "lr": lr, "train_images": tr["images"], "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
                "val_loss": vloss, "val_acc": vm.get("accuracy", float("nan")), "val_auc": vm.get("auc", float("nan")),
                "val_sensitivity": vm.get("sensitivity", float("nan")),
                "val_specificity": vm.get("specificity", float("nan")),
                "epoch_time_s": time.perf_counter() - t0,
            }
            score = _score(row, recipe.select_metric)
            row["best"] = int(score > best_score or not best_path.exists())
            if row["best"]:
                best_score = max(score, best_score)
            chance_epochs = chance_epochs + 1 if abs(tr["train_loss"] - CHANCE_LOSS) < 0.01 else 0
            history.append(row)
            watched = _score(row, recipe.plateau_metric)
            if not math.isfinite(watched):  # no validation images: fall back to training accuracy
                watched = row["train_acc"]
            if sched.step(watched):
                _say(f"{recipe.plateau_metric} stopped improving: lr -> {optimizer.param_groups[0]['lr']:.3g} "
                     f"(drop {sched.drops}/{sched.max_drops})", info)
            if info.is_main:
                created += [p for p in (best_path, last_path, run / "log.csv", run / "curves.png") if not p.exists()]
                if row["best"]:
                    save(best_path, row, with_state=False)
                save(last_path, row, with_state=True)
                _write_log(run / "log.csv", history)
                training_curves_png(history, run / "curves.png")
            _say(f"epoch {epoch}: loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | val loss "
                 f"{vloss:.4f} acc {row['val_acc']:.3f} AUC {row['val_auc']:.3f} | {row['epoch_time_s']:.1f}s"
                 + (" *" if row["best"] else ""), info)
            if recipe.chance_warn_epochs and chance_epochs >= recipe.chance_warn_epochs:
                _say(f"WARNING: the training loss has stayed at chance (ln 2 = 0.693) for {chance_epochs} epochs: "
                     "the network is not learning. " + chance_hint(recipe), info)
            barrier(info)
            if recipe.stop_after_last_drop and sched.drops >= sched.max_drops \
                    and sched.bad_epochs >= recipe.stop_after_last_drop:
                _say(f"stopping after epoch {epoch}: every lr drop is spent and {recipe.plateau_metric} has not "
                     f"improved for {sched.bad_epochs} epochs (stop_after_last_drop)", info)
                break

        summary: dict[str, Any] = {"run": str(run), "epochs": len(history), "history": history}
        if info.is_main and history:
            summary["best"] = max(history, key=lambda r: _score(r, recipe.select_metric))
            if len(data.test):
                best = load_checkpoint(best_path, device=dev)
                labels, probs, tloss = predict(best.model, data.test, dev)
                tm = classification_metrics(labels, probs)
                tm["loss"] = tloss
                fpr, tpr, _ = roc_curve(labels, probs)
                roc_png(fpr, tpr, tm["auc"], run / "roc_test.png")
                write_json_atomic(run / "test_metrics.json", tm)
                summary["test"] = tm
                _say(f"test ({tm['n']} images, best.pt): acc {tm['accuracy']:.3f} AUC {tm['auc']:.3f} "
                     f"sens {tm['sensitivity']:.3f} spec {tm['specificity']:.3f}", info)
        barrier(info)
        return summary
    except BaseException:
        if info.is_main and not last_path.exists():  # failed before its first checkpoint: leave nothing
            for p in created:
                p.unlink(missing_ok=True)
            unlock_run(lock)
            lock = None
            if not run_was_there and run.is_dir() and not any(run.iterdir()):
                run.rmdir()
        raise
    finally:
        unlock_run(lock)
        cleanup(info)
