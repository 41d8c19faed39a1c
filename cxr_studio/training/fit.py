"""``fit``: train a recipe on data roots into a run folder.

Run folder: ``config.toml`` + ``config.json`` (resolved recipe), ``split.json``, ``log.csv`` (one row
per epoch), ``curves.png``, ``best.pt`` (best validation ``select_metric``), ``last.pt`` (adds the
``RunState`` - optimizer / schedule / epoch / RNG state - for ``--resume``), ``test_metrics.json`` +
``roc_test.png``. Every epoch's randomness is a function of (seed, epoch), so a resumed run repeats an
uninterrupted one.

The pieces, in order: ``RunFolder.open`` (run_folder.py: refusals, lock, recipe check), ``_open_data``
(cache, split, the folder's first files), ``_build`` (model, optimizer, guidance, schedule, scaler),
``_restore`` (``last.pt`` back into them), ``_start_epochs`` (DDP wrapper, sampler, loader),
``_one_epoch`` (train, validate, log, keep best/last) and ``_final_test`` (``best.pt`` on the test part).
With ``ema_epochs`` > 0 the weight average (averaging.py) is what is validated and saved.
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm
from torch.nn.parallel import DistributedDataParallel as DDP

from .averaging import make_average, steps_per_epoch
from .data import check_both_classes, scan_roots, select, write_json_atomic
from .ddp import DistInfo, barrier, cleanup, dist_from_env, init_distributed
from .guidance import setup_guidance
from .loops import (CHANCE_LOSS, PlateauDrops, TrainingError, amp_dtype, make_loader, make_optimizer, predict,
                    train_epoch)
from .metrics import classification_metrics, roc_curve
from .plots import roc_png, training_curves_png
from .prepare import PreparedData, group_ids, prepare_data
from .recipes import Recipe
from .run_folder import RunFolder, chance_hint, report_split_coverage
from .run_state import RunState
from .tensors import GroupedSampler
from ..core.atomic import strict_json, write_text_atomic
from ..core.versions import versions
from ..core.runtime.engine import choose_device
from ..core.models import build_model
from ..core.models.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["LOG_FIELDS", "RunState", "choose_training_device", "fit", "pick_device"]

LOG_FIELDS = ["epoch", "lr", "train_images", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "val_sensitivity",
              "val_specificity", "val_pointing", "epoch_time_s", "best"]


def _say(msg: str, info: DistInfo) -> None:
    if info.is_main:
        tqdm.write(msg, file=sys.stderr)


def choose_training_device(preference: str | None, info: DistInfo) -> torch.device:
    """The core engine's device choice; under DDP on CUDA each process takes cuda:LOCAL_RANK."""
    dev = pick_device(preference)
    if info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
    return dev


def pick_device(preference: str | None) -> torch.device:
    """``core.engine.choose_device`` (cuda -> mps -> cpu, or the named one)."""
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


def _seed(recipe: Recipe, dev: torch.device) -> None:
    torch.manual_seed(recipe.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.use_deterministic_algorithms(False)


def _open_data(recipe: Recipe, roots: list[str | Path], folder: RunFolder, resume: bool,
               split_file: str | Path | None, preprocess_fn: Callable[..., np.ndarray] | None, progress: bool,
               info: DistInfo) -> PreparedData:
    """Rank 0 fills the cache and writes split.json, the others then read them."""
    run = folder.path
    data: PreparedData | None = None
    if info.is_main:
        check_both_classes(scan_roots(list(roots)), "the data roots " + ", ".join(str(r) for r in roots))
        reused = split_file or (run / "split.json" if (run / "split.json").exists() else None)
        data = prepare_data(recipe, roots, run, split_file, preprocess_fn, progress=progress, write=False)
        check_both_classes(select(data.samples, data.split["train"]), "the training part of the split")
        if reused is not None:
            report_split_coverage(reused, data, lambda m: _say(m, info))
        # the run starts here: only now does the run folder get its files
        for name, text in (("split.json", strict_json({"seed": data.split_seed, "fractions": list(recipe.split),
                                                         **data.split}, indent=2)),
                           ("config.toml", recipe.to_toml()),
                           ("config.json", strict_json(recipe.to_dict(), indent=2))):
            if name == "split.json" and resume and (run / name).exists():
                continue
            folder.will_write(run / name)
            write_text_atomic(run / name, text)
    barrier(info)
    if data is None:
        data = prepare_data(recipe, roots, run, run / "split.json", preprocess_fn, progress=False, write=False)
    _say(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images "
         f"(cache {data.cache.folder}, {data.cache.hits} cached, {data.cache.misses} computed)", info)
    return data


@dataclass
class _Trainer:
    """What a run trains with, the same from its opening to its end."""

    recipe: Recipe
    info: DistInfo
    dev: torch.device
    data: PreparedData
    model: torch.nn.Module
    arch_kwargs: dict[str, Any]
    optimizer: torch.optim.Optimizer
    guidance: Any
    sched: PlateauDrops
    use_amp: bool
    scaler: Any
    provenance: dict[str, Any]
    net: torch.nn.Module | None = None  # the model, in a DDP wrapper when distributed
    sampler: Any = None
    loader: Any = None
    average: Any = None  # the weight average (recipe ema_epochs), None without one

    @property
    def evaluated(self) -> torch.nn.Module:
        """What is validated and saved: the weight average when the recipe keeps one, else the model."""
        return self.average.module if self.average is not None else self.model


def _build(recipe: Recipe, data: PreparedData, dev: torch.device, info: DistInfo, progress: bool,
           roots: list[str | Path], command: str) -> _Trainer:
    """Model, optimizer, lesion guidance, lr schedule and grad scaler, in this order (the model's
    random init and the guidance head's come from ``_seed``'s stream)."""
    arch_kwargs = recipe.model_kwargs()
    model = build_model(recipe.arch, **arch_kwargs).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    dtype = amp_dtype(dev, recipe.amp)
    use_amp, fp16 = dtype is not None, dtype == torch.float16
    precision = ("" if not use_amp else ", fp16 autocast with a grad scaler" if fp16 else ", bf16 autocast")
    _say(f"model: {recipe.arch} {arch_kwargs} - {n_params / 1e6:.2f}M parameters on {dev}{precision}", info)
    steps = steps_per_epoch(len(data.train), recipe.batch_size, info.world_size, recipe.max_steps_per_epoch)
    average = make_average(model, recipe.ema_epochs, steps)  # before the guidance hooks the model
    if average is not None:
        _say(f"weight average: decay {average.decay:.4f} per step ({recipe.ema_epochs:g} epochs of {steps} "
             "steps); validated and saved in place of the raw weights", info)
    optimizer = make_optimizer(model, recipe)
    guidance = setup_guidance(recipe, model, optimizer, dev, data, progress=progress and info.is_main)
    if guidance is not None:
        _say(f"lesion guidance: {guidance.form} x {recipe.lesion_weight:g} at {guidance.layer}; "
             f"{data.train.n_with_lesion} of {len(data.train)} training images have a lesion mask{guidance.note}",
             info)
    sched = PlateauDrops(optimizer, recipe.lr_drop_factor, recipe.lr_patience, recipe.max_lr_drops)
    scaler = torch.amp.GradScaler("cuda", enabled=fp16) if dev.type == "cuda" else None
    provenance = {
        "recipe": recipe.to_dict(), "recipe_name": recipe.name, "seed": recipe.seed,
        "data_manifest_hash": data.manifest, "data_roots": [str(r) for r in roots],
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "versions": versions(), "command": command, "world_size": info.world_size,
    }
    return _Trainer(recipe, info, dev, data, model, arch_kwargs, optimizer, guidance, sched, use_amp, scaler,
                    provenance, average=average)


def _restore(t: _Trainer, folder: RunFolder) -> RunState:
    """``last.pt`` back into the model, optimizer, guidance head, schedule and scaler."""
    ck = load_checkpoint(folder.last, device=t.dev)
    state = RunState.from_checkpoint(ck.training_state or {})
    if t.average is not None:
        t.average.restore(t.model, ck.model, state.average)
    else:
        t.model.load_state_dict(ck.model.state_dict())
    t.optimizer.load_state_dict(state.optimizer)
    if t.guidance is not None:
        t.guidance.load_state_dict(state.guidance)
    t.sched.load_state_dict(state.scheduler)
    if t.scaler is not None and state.scaler:
        t.scaler.load_state_dict(state.scaler)
    _say(f"resuming {folder.path} after epoch {state.epoch}", t.info)
    return state


def _start_epochs(t: _Trainer) -> None:
    """The DDP wrapper (when distributed), the sampler and the loader."""
    t.net = t.model
    if t.info.enabled:
        t.net = DDP(t.model, device_ids=[t.dev.index] if t.dev.type == "cuda" else None)
    recipe, data, info = t.recipe, t.data, t.info
    if recipe.pair_batches and not info.enabled:
        t.sampler = GroupedSampler(group_ids(select(data.samples, data.split["train"])), seed=recipe.seed)
    else:
        t.sampler = DistributedSampler(data.train, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                       seed=recipe.seed)
    t.loader = make_loader(data.train, recipe.batch_size, t.sampler, recipe.workers)


def _save(t: _Trainer, path: Path, row: dict, state: RunState | None) -> None:
    """A checkpoint of the model after ``row``'s epoch; with ``state`` (last.pt) also the run's state."""
    training_state = None
    if state is not None:
        training_state = replace(
            state, optimizer=t.optimizer.state_dict(), scheduler=t.sched.state_dict(), rng=torch.get_rng_state(),
            scaler=t.scaler.state_dict() if t.scaler is not None else {},
            guidance=t.guidance.state_dict() if t.guidance is not None else None,  # resume only, never in the model
            average=t.average.state(t.model) if t.average is not None else None,
        ).to_checkpoint()
    prov = dict(t.provenance, epoch=row["epoch"], metrics={k: v for k, v in row.items() if k != "best"})
    save_checkpoint(path, t.evaluated, arch=t.recipe.arch, arch_kwargs=t.arch_kwargs,
                    class_names=["normal", "abnormal"], preprocess=t.recipe.spec, provenance=prov,
                    training_state=training_state)


def _train(t: _Trainer, epoch: int, progress: bool, loss_fn: Any, folder: RunFolder) -> dict[str, Any]:
    """One pass over the training images; a failure names the last good checkpoint."""
    recipe = t.recipe
    bar = None
    if progress and t.info.is_main:
        total = len(t.sampler) if not recipe.max_steps_per_epoch else min(
            len(t.sampler), recipe.max_steps_per_epoch * recipe.batch_size)
        bar = tqdm(total=total, desc=f"epoch {epoch}/{recipe.epochs}", unit="img", leave=False, file=sys.stderr)
    try:
        return train_epoch(t.net, t.loader, t.optimizer, t.dev, amp=t.use_amp, scaler=t.scaler, info=t.info,
                           max_steps=recipe.max_steps_per_epoch, bar=bar, loss_fn=loss_fn, guidance=t.guidance,
                           after_step=(lambda: t.average.update(t.model)) if t.average is not None else None)
    except (TrainingError, torch.cuda.OutOfMemoryError) as exc:
        why = str(exc) if isinstance(exc, TrainingError) else (
            f"the GPU ran out of memory with batch_size={recipe.batch_size}; try "
            f"--set batch_size={max(1, recipe.batch_size // 2)} (with --resume to go on).")
        kept = folder.last if folder.last.exists() else "none yet"
        raise TrainingError(f"epoch {epoch}: {why} Last good checkpoint: {kept}.") from None
    finally:
        if bar is not None:
            bar.close()


def _validate(t: _Trainer, epoch: int, lr: float, tr: dict[str, Any], t0: float) -> dict[str, Any]:
    """The epoch's log row: training numbers and the validation metrics."""
    labels, probs, vloss = predict(t.evaluated, t.data.val, t.dev, batch_size=max(t.recipe.batch_size, 32),
                                   amp=t.use_amp)
    vm = classification_metrics(labels, probs) if len(labels) else {}
    return {
        "epoch": epoch, "lr": lr, "train_images": tr["images"], "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
        "val_loss": vloss, "val_acc": vm.get("accuracy", float("nan")), "val_auc": vm.get("auc", float("nan")),
        "val_sensitivity": vm.get("sensitivity", float("nan")),
        "val_specificity": vm.get("specificity", float("nan")),
        "epoch_time_s": time.perf_counter() - t0,
    }


def _one_epoch(t: _Trainer, state: RunState, folder: RunFolder, epoch: int, progress: bool,
               loss_fn: Any) -> bool:
    """Train, validate, log, keep best.pt / last.pt; True when the run should stop here."""
    recipe, info = t.recipe, t.info
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed * 100003 + epoch)  # dropout etc.: same per epoch on resume
    t.data.train.set_epoch(epoch)
    t.sampler.set_epoch(epoch)
    lr = t.optimizer.param_groups[0]["lr"]
    tr = _train(t, epoch, progress, loss_fn, folder)
    vp = float("nan")  # the validation Grad-CAM pointing game: guided runs only
    if t.guidance is not None:
        vp, vn = t.guidance.val_pointing(t.evaluated)
        _say(f"epoch {epoch}: lesion term ({t.guidance.form}) {tr['lesion_term']:.4f}, "
             f"{tr['lesion_images']} guided images; validation Grad-CAM pointing game {vp:.3f} "
             f"on {vn} images", info)
    row = _validate(t, epoch, lr, tr, t0)
    row["val_pointing"] = vp
    score = _score(row, recipe.select_metric)
    row["best"] = int(score > state.best_score or not folder.best.exists())
    if row["best"]:
        state.best_score = max(score, state.best_score)
    state.chance_epochs = state.chance_epochs + 1 if abs(tr["train_loss"] - CHANCE_LOSS) < 0.01 else 0
    state.history.append(row)
    state.epoch = epoch
    watched = _score(row, recipe.plateau_metric)
    if not math.isfinite(watched):  # no validation images: fall back to training accuracy
        watched = row["train_acc"]
    if t.sched.step(watched):
        _say(f"{recipe.plateau_metric} stopped improving: lr -> {t.optimizer.param_groups[0]['lr']:.3g} "
             f"(drop {t.sched.drops}/{t.sched.max_drops})", info)
    if info.is_main:
        folder.will_write(folder.best, folder.last, folder.path / "log.csv", folder.path / "curves.png")
        if row["best"]:
            _save(t, folder.best, row, None)
        _save(t, folder.last, row, state)
        _write_log(folder.path / "log.csv", state.history)
        training_curves_png(state.history, folder.path / "curves.png")
    _say(f"epoch {epoch}: loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | val loss "
         f"{row['val_loss']:.4f} acc {row['val_acc']:.3f} AUC {row['val_auc']:.3f} | {row['epoch_time_s']:.1f}s"
         + (" *" if row["best"] else ""), info)
    if recipe.chance_warn_epochs and state.chance_epochs >= recipe.chance_warn_epochs:
        _say(f"WARNING: the training loss has stayed at chance (ln 2 = 0.693) for {state.chance_epochs} epochs: "
             "the network is not learning. " + chance_hint(recipe), info)
    barrier(info)
    if recipe.stop_after_last_drop and t.sched.drops >= t.sched.max_drops \
            and t.sched.bad_epochs >= recipe.stop_after_last_drop:
        _say(f"stopping after epoch {epoch}: every lr drop is spent and {recipe.plateau_metric} has not "
             f"improved for {t.sched.bad_epochs} epochs (stop_after_last_drop)", info)
        return True
    return False


def _final_test(t: _Trainer, state: RunState, folder: RunFolder) -> dict[str, Any]:
    """The summary; on rank 0 also ``best.pt`` scored on the test part (test_metrics.json, roc_test.png)."""
    run, history = folder.path, state.history
    summary: dict[str, Any] = {"run": str(run), "epochs": len(history), "history": history}
    if t.info.is_main and history:
        summary["best"] = max(history, key=lambda r: _score(r, t.recipe.select_metric))
        if len(t.data.test):
            best = load_checkpoint(folder.best, device=t.dev)
            labels, probs, tloss = predict(best.model, t.data.test, t.dev)
            tm = classification_metrics(labels, probs)
            tm["loss"] = tloss
            fpr, tpr, _ = roc_curve(labels, probs)
            roc_png(fpr, tpr, tm["auc"], run / "roc_test.png")
            write_json_atomic(run / "test_metrics.json", tm)
            summary["test"] = tm
            _say(f"test ({tm['n']} images, best.pt): acc {tm['accuracy']:.3f} AUC {tm['auc']:.3f} "
                 f"sens {tm['sensitivity']:.3f} spec {tm['specificity']:.3f}", t.info)
    return summary


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
    info = dist_from_env()
    dev = choose_training_device(device, info)
    init_distributed(info, dev)
    folder = RunFolder(Path(out), Path(out).exists())
    try:
        folder.open(recipe, resume, split_file, info)
        _seed(recipe, dev)
        data = _open_data(recipe, roots, folder, resume, split_file, preprocess_fn, progress, info)
        t = _build(recipe, data, dev, info, progress, roots, command)
        state = _restore(t, folder) if resume else RunState()
        _start_epochs(t)
        for epoch in range(state.epoch + 1, recipe.epochs + 1):
            if _one_epoch(t, state, folder, epoch, progress, loss_fn):
                break
        summary = _final_test(t, state, folder)
        barrier(info)
        return summary
    except BaseException:
        if info.is_main and not folder.last.exists():  # failed before its first checkpoint: leave nothing
            folder.undo()
        raise
    finally:
        folder.close()
        cleanup(info)
