"""``cxr-studio-train``: subcommands fit, eval, search, phantoms, export-release, models, recipes.

Subcommands live in a registry: a module adds one with ``@subcommand(name, help)`` on a function
``(parser) -> runner`` (e.g. ``cxr_studio/training/segmenter.py``; listed in ``OPTIONAL_MODULES`` and
imported when present). Errors a user can cause print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

Runner = Callable[[argparse.Namespace], int]
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Runner]]] = {}
OPTIONAL_MODULES = ["cxr_studio.training.segmenter"]
OPTIONAL_MODULES.append("cxr_studio.training.lung_check")  # lung-check (issue 4: the paper's visual claim)
OPTIONAL_MODULES.append("cxr_studio.training.localize")  # localize (issue 14: lesion-level scores)
OPTIONAL_MODULES.append("cxr_studio.training.ship")  # ship: release a run as a shipped model (issue 12)


def subcommand(name: str, help: str) -> Callable:
    """Register ``setup(parser) -> runner`` as ``cxr-studio-train NAME``."""

    def deco(setup: Callable[[argparse.ArgumentParser], Runner]) -> Callable:
        SUBCOMMANDS[name] = (help, setup)
        return setup

    return deco


def _recipe_args(p: argparse.ArgumentParser) -> None:
    from .recipes import recipe_names

    p.add_argument("--recipe", default=None,
                   help=f"named recipe: {', '.join(recipe_names())}")
    p.add_argument("--config", help="TOML file overriding recipe fields")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field (repeatable), e.g. --set lr=0.01 --set preprocess.input_size=64")


def _resolve(args: argparse.Namespace) -> Any:
    from .recipes import RecipeError, load_recipe

    if args.recipe is None and args.config is None:
        raise RecipeError("give --recipe NAME or --config FILE.toml (cxr-studio-train recipes lists the names)")
    return load_recipe(args.recipe, args.config, args.sets)


@subcommand("fit", "train a recipe on data roots into a run folder")
def _fit_setup(p: argparse.ArgumentParser) -> Runner:
    _recipe_args(p)
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT", help="data roots (layouts auto-detected)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--split-file", default=None, help="reuse this split.json")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")

    def run(a: argparse.Namespace) -> int:
        from .fit import fit

        if a.threads:
            import torch

            torch.set_num_threads(a.threads)

        recipe = _resolve(a)
        summary = fit(recipe, a.data, a.out, resume=a.resume, device=a.device, split_file=a.split_file,
                      progress=not a.no_progress, command=" ".join(["cxr-studio-train", *sys.argv[1:]]))
        best = summary.get("best")
        if best:
            print(f"best epoch {best['epoch']}: val acc {best['val_acc']:.3f} AUC {best['val_auc']:.3f}; "
                  f"run folder {a.out}")
        return 0

    return run


def checkpoint_and_images_args(p: argparse.ArgumentParser, verb: str, which: str = "") -> None:
    """--checkpoint, --data, and which images: --split-file/--part or --all (default: the
    split.json beside the checkpoint, its test part)."""
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint to use (default: the shipped TB model, resources/models/cxrnet-tb.pt)")
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--split-file", default=None,
                   help=f"{verb} the {which}images of this split's --part (default: the split.json beside the "
                        "checkpoint)")
    g.add_argument("--all", action="store_true", help=f"{verb} every {which}image")
    p.add_argument("--part", default="test", choices=["train", "val", "test"], help="which part of the split")


def _threshold_arg(text: str) -> float | str:
    from .evaluate import parse_threshold

    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@subcommand("eval", "evaluate a checkpoint: accuracy, AUC, sensitivity, specificity, ROC")
def _eval_setup(p: argparse.ArgumentParser) -> Runner:
    checkpoint_and_images_args(p, "evaluate")
    from ..core.models.args import add_model_arguments

    add_model_arguments(p)  # --arch, --classes, --input-size, --preset, --multi-label
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--roc", default=None, help="ROC PNG path (default: next to --json or the checkpoint)")
    p.add_argument("--device", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threshold", default=None, type=_threshold_arg,
                   help="probability of 'abnormal' from which an image is called abnormal (default: the "
                        "checkpoint's operating threshold when it declares one, else 0.5), or "
                        "'val': the Youden-optimal threshold on the split's validation part")

    def run(a: argparse.Namespace) -> int:
        from .evaluate import evaluate_checkpoint
        from .shipped_defaults import resolve_model_and_split

        resolve_model_and_split(a)

        from ..core.atomic import strict_json

        def show(m: dict) -> None:  # printed before any file is written: a failed write loses nothing
            print(strict_json({k: m[k] for k in ("n", "accuracy", "auc", "sensitivity", "specificity",
                                                 "confusion_matrix", "threshold", "threshold_source", "images")},
                              indent=1), flush=True)
            for note in m.get("notes", []):
                print(f"note: {note}", file=sys.stderr)

        evaluate_checkpoint(a.checkpoint, a.data, split_file=a.split_file, use_all=a.all, part=a.part,
                            json_out=a.json, roc_out=a.roc, device=a.device, cache_dir=a.cache_dir,
                            threshold=a.threshold, on_metrics=show, model_options=_model_options(a))
        return 0

    return run


def _model_options(a: argparse.Namespace) -> dict[str, Any]:
    from ..core.models.args import model_options

    return model_options(a)


@subcommand("search", "randomized hyper-parameter search; writes the best config as TOML")
def _search_setup(p: argparse.ArgumentParser) -> Runner:
    _recipe_args(p)
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT")
    p.add_argument("--out", required=True, help="search folder (one run folder per trial)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the search itself")
    p.add_argument("--device", default=None)

    def run(a: argparse.Namespace) -> int:
        from .search import random_search

        res = random_search(_resolve(a), a.data, a.out, trials=a.trials, epochs=a.epochs, seed=a.seed,
                            device=a.device)
        print(res["table"])
        print(f"best config: {res['best_toml']}")
        return 0

    return run


@subcommand("phantoms", "write a synthetic phantom dataset (Shenzhen layout + lesion masks)")
def _phantoms_setup(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--abnormal-fraction", type=float, default=0.5)
    p.add_argument("--paired", action="store_true",
                   help="write each seed twice, without and with lesions (same anatomy and noise): 2N images")

    def run(a: argparse.Namespace) -> int:
        if a.paired:
            from .phantom_pairs import write_paired_phantoms

            out = write_paired_phantoms(a.out, a.n, seed=a.seed, size=a.size)
            print(f"wrote {a.n} normal/abnormal phantom pairs to {out}")
            return 0
        from ..core.phantoms.phantom import write_phantom_dataset

        out = write_phantom_dataset(a.out, a.n, seed=a.seed, size=a.size, abnormal_fraction=a.abnormal_fraction)
        print(f"wrote {a.n} phantoms to {out}")
        return 0

    return run


@subcommand("export-release", "strip optimizer/training state from a checkpoint for sharing; with --arch, "
            "turn a state dict (torchvision, timm:, xrv:) into a self-describing CXR Studio checkpoint")
def _export_setup(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("checkpoint")
    p.add_argument("out")
    from ..core.models.args import add_model_arguments

    add_model_arguments(p)

    def run(a: argparse.Namespace) -> int:
        from ..core.models.checkpoint import export_release

        if any(v is not None for v in _model_options(a).values()):
            from ..core.models.importers import release_imported

            release_imported(a.checkpoint, a.out, **_model_options(a))
        else:
            export_release(a.checkpoint, a.out)
        print(f"wrote {a.out} ({Path(a.out).stat().st_size / 1e6:.2f} MB)")
        return 0

    return run


@subcommand("models", "list the architectures with their parameter counts")
def _models_setup(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("--arch", nargs="*", default=None, help="only these architectures")

    def run(a: argparse.Namespace) -> int:
        from ..core.models import architectures, build_model

        for name in a.arch or architectures():
            kw: dict[str, Any] = {"weights": "none"} if name in ("alexnet", "vgg16", "vgg19") else {}
            try:
                m = build_model(name, **kw)
                n = sum(p.numel() for p in m.parameters())
                print(f"{name:12s} {n:>13,d} parameters ({n / 1e6:.1f}M)")
                del m
            except (ValueError, TypeError) as exc:
                print(f"{name:12s} (cannot build with defaults: {exc})")
        return 0

    return run


@subcommand("demo-check", "accuracy and pointing game of a phantom-trained checkpoint on fresh phantoms")
def _demo_check_setup(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("checkpoint")
    p.add_argument("--n-accuracy", type=int, default=200)
    p.add_argument("--n-pointing", type=int, default=30)
    p.add_argument("--dilation-px", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="phantom size for the accuracy check")

    def run(a: argparse.Namespace) -> int:
        from ..core.models.checkpoint import load_checkpoint
        from .demo_check import phantom_accuracy, pointing_game_scores

        ck = load_checkpoint(a.checkpoint)
        acc = phantom_accuracy(ck.model, ck.spec, n=a.n_accuracy, size=a.size)
        pg = pointing_game_scores(ck.model, ck.spec, n=a.n_pointing, dilation_px=a.dilation_px)
        from ..core.atomic import strict_json

        print(strict_json({"accuracy": acc["accuracy"], "auc": acc["auc"], "n_accuracy": acc["n"],
                          "n_pointing": pg["n"], **{k: v for k, v in pg.items() if k not in ("channels", "n")}},
                         indent=1))
        return 0

    return run


@subcommand("recipes", "list the named recipes (--show NAME prints one as TOML)")
def _recipes_setup(p: argparse.ArgumentParser) -> Runner:
    p.add_argument("--show", default=None)

    def run(a: argparse.Namespace) -> int:
        from .recipes import RECIPES, load_recipe

        if a.show:
            print(load_recipe(a.show).to_toml(), end="")
            return 0
        for name, d in RECIPES.items():
            print(f"{name:20s} {d.get('description', '')}")
        return 0

    return run


def _load_optional() -> None:
    for mod in OPTIONAL_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Runner]]:
    _load_optional()
    parser = argparse.ArgumentParser(prog="cxr-studio-train", description="Train and evaluate CXR Studio models.")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", title="subcommands")
    runners: dict[str, Runner] = {}
    for name, (help_text, setup) in SUBCOMMANDS.items():
        sp = subs.add_parser(name, help=help_text, description=help_text)
        runners[name] = setup(sp)
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        out = Path(getattr(args, "out", "") or ".")
        hint = f"; continue with the same command and --resume (from {out / 'last.pt'})" \
            if args.command == "fit" and (out / "last.pt").exists() else ""
        print(f"cxr-studio-train {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except ValueError as exc:  # every user-caused error is a ValueError subclass with a sentence
        print(f"cxr-studio-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only --out, a full disk: one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"cxr-studio-train {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
