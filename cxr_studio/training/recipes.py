"""Training recipes: a dataclass with defaults in code, named presets, TOML files and ``--set``.

Resolution order: named recipe -> ``--config F.toml`` -> ``--set key=value`` (last wins).
Preprocessing settings live in the ``preprocess`` table (``--set preprocess.input_size=64``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..core.imaging.spec import PreprocessSpec
from .named_recipes import RECIPES, recipe_names  # noqa: F401  (re-exported: cli, tests)


LESION_GUIDANCE = ("none", "gradcam", "input_grad", "seg_head")
# cxrnet.HEADS, restated: importing core.models would pull torch into recipe parsing (a test keeps them equal)
CXRNET_HEADS = ("fc", "gap")
CXRNET_NORMS = ("lrn", "batch")  # cxrnet.NORMS, restated likewise


class RecipeError(ValueError):
    """A recipe, TOML file or ``--set`` override that cannot be used."""


@dataclass
class Recipe:
    """Every setting of a training run, as plain values."""

    name: str = "custom"
    description: str = ""
    # -- model ------------------------------------------------------------------------------
    arch: str = "cxrnet"
    width: float = 1.0  # cxrnet: channel multiplier
    fc_width: int = 4096  # cxrnet: units of fc6/fc7
    head: str = "fc"  # cxrnet: "fc" (fc6 -> fc7 -> fc8, the paper) | "gap" (global average pool -> fc8)
    norm: str = "lrn"  # cxrnet: "lrn" (the paper's, after conv1/conv2) | "batch" (BatchNorm after every conv)
    init: str = "paper"  # cxrnet: "paper" N(0, 0.01) | "kaiming"
    dropout: float = 0.5  # cxrnet: dropout on fc6/fc7
    weights: str = "imagenet"  # torchvision nets: "imagenet" | "none" | path
    head_lr_factor: float = 1.0  # learning-rate multiplier of model.new_layers
    # -- optimisation -----------------------------------------------------------------------
    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2
    batch_size: int = 32
    epochs: int = 60
    lr_drop_factor: float = 0.1  # lr multiplied by this when plateau_metric stops improving
    lr_patience: int = 3  # epochs without plateau_metric improvement before a drop
    max_lr_drops: int = 3
    stop_after_last_drop: int = 0  # once every lr drop is spent, stop after this many epochs without
    #                                plateau_metric improvement (0 = run all epochs, as the paper)
    plateau_metric: str = "val_acc"  # what the lr schedule watches (the paper: validation accuracy)
    select_metric: str = "val_auc"  # which validation metric picks best.pt (val_pointing: guided runs)
    seed: int = 0
    split_seed: int = -1  # the stratified split's seed (-1: the same as seed), so a run can change the seed
    #                       of its weights and batches and keep its images' split
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    chance_warn_epochs: int = 3  # warn when the train loss sits at ln 2 this many epochs
    max_steps_per_epoch: int = 0  # 0 = the whole training set each epoch (tests use a few)
    ema_epochs: float = 0.0  # > 0: validate and save an exponential moving average of the weights (and
    #                          BatchNorm statistics) over about this many epochs (training/averaging.py)
    # -- data -------------------------------------------------------------------------------
    split: list[float] = field(default_factory=lambda: [0.7, 0.2, 0.1])
    use_dataset_masks: bool = True  # pass the dataset's lung masks to preprocess()
    aug_size: int = 0  # cached image size; > input_size enables random crops (0 = input_size)
    rotation_deg: float = 10.0  # random rotation in [-r, r]
    translate_px: float = 15.0  # random shift in [-t, t] pixels (at the cached size)
    hflip: bool = False
    intensity_jitter: float = 0.0  # random gamma and contrast factors in exp([-j, j]) (0 = off)
    pair_batches: bool = False  # keep groups (paired phantoms) together in batches, same augmentation
    workers: int = 0
    cache_dir: str = ""  # "" = <out>/../.cache
    # -- lesion guidance (training/guidance.py; off by default) ------------------------------
    lesion_guidance: str = "none"  # "none" | "gradcam" | "input_grad" | "seg_head"
    lesion_weight: float = 0.0  # weight of the guidance term added to the cross-entropy
    lesion_grow_px: float = 8.0  # lesion masks grown by this many pixels (at 512, scaled to the input)
    lesion_layer: str = ""  # layer the gradcam / seg_head forms read ("" = the deepest conv, relu5)
    preprocess: dict[str, Any] = field(default_factory=lambda: PreprocessSpec.preset("paper").to_dict())

    def __post_init__(self) -> None:
        self.validate()

    # -- checks and views -------------------------------------------------------------------
    def validate(self) -> None:
        """Raise RecipeError with a readable sentence for settings that cannot work."""
        try:
            spec = PreprocessSpec.from_dict(dict(self.preprocess))
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"Invalid preprocess settings: {exc}") from None
        if self.split_seed < -1:
            raise RecipeError(f"split_seed must be -1 (the same as seed) or a seed >= 0, got {self.split_seed}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise RecipeError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise RecipeError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise RecipeError(f"epochs must be at least 1, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise RecipeError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.init not in ("paper", "kaiming"):
            raise RecipeError(f"init must be 'paper' or 'kaiming', got {self.init!r}")
        if self.head not in CXRNET_HEADS:
            raise RecipeError(f"head must be {' or '.join(map(repr, CXRNET_HEADS))}, got {self.head!r}")
        if self.norm not in CXRNET_NORMS:
            raise RecipeError(f"norm must be {' or '.join(map(repr, CXRNET_NORMS))}, got {self.norm!r}")
        if not (0.0 <= self.intensity_jitter <= 1.0):
            raise RecipeError(f"intensity_jitter must be in [0, 1], got {self.intensity_jitter}")
        if not (math.isfinite(self.ema_epochs) and 0.0 <= self.ema_epochs <= 100.0):
            raise RecipeError(f"ema_epochs must be between 0 (off) and 100, got {self.ema_epochs}")
        if not (0.0 <= self.dropout < 1.0):
            raise RecipeError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise RecipeError(f"split must be three fractions summing to 1, got {self.split}")
        if self.aug_size and self.aug_size < spec.input_size:
            raise RecipeError(
                f"aug_size ({self.aug_size}) must be 0 or at least preprocess.input_size ({spec.input_size})"
            )
        if self.lr_patience < 1 or self.max_lr_drops < 0 or self.stop_after_last_drop < 0:
            raise RecipeError(
                "lr_patience must be at least 1, max_lr_drops and stop_after_last_drop at least 0; got "
                f"{self.lr_patience}, {self.max_lr_drops}, {self.stop_after_last_drop}"
            )
        if self.lesion_guidance not in LESION_GUIDANCE:
            raise RecipeError(f"lesion_guidance must be one of {', '.join(LESION_GUIDANCE)}, got {self.lesion_guidance!r}")
        if not (math.isfinite(self.lesion_weight) and self.lesion_weight >= 0):
            raise RecipeError(f"lesion_weight must be a number >= 0, got {self.lesion_weight}")
        if self.lesion_guidance != "none" and self.lesion_weight == 0:
            raise RecipeError(f"lesion_guidance={self.lesion_guidance!r} needs a lesion_weight above 0")
        if not (math.isfinite(self.lesion_grow_px) and 0 <= self.lesion_grow_px <= 256):
            raise RecipeError(f"lesion_grow_px must be between 0 and 256, got {self.lesion_grow_px}")
        if self.plateau_metric not in ("val_auc", "val_acc", "val_loss"):
            raise RecipeError(f"plateau_metric must be val_auc, val_acc or val_loss, got {self.plateau_metric!r}")
        if self.select_metric not in ("val_auc", "val_acc", "val_loss", "val_pointing"):
            raise RecipeError("select_metric must be val_auc, val_acc, val_loss or val_pointing, "
                              f"got {self.select_metric!r}")
        if self.select_metric == "val_pointing" and self.lesion_guidance == "none":
            raise RecipeError("select_metric=val_pointing picks best.pt by the validation Grad-CAM pointing game, "
                              "which only lesion-guided runs measure: set lesion_guidance (e.g. gradcam) too")

    @property
    def split_rng_seed(self) -> int:
        """The seed the stratified split is drawn with."""
        return self.seed if self.split_seed < 0 else self.split_seed

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(dict(self.preprocess))

    @property
    def cache_size(self) -> int:
        return max(int(self.aug_size or 0), int(self.spec.input_size))

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model(self.arch, ...)``."""
        if self.arch.startswith("cxrnet"):
            # norm only where it is not the paper's: checkpoints made before the option keep their arch_kwargs
            return ({"norm": self.norm} if self.norm != "lrn" else {}) | {
                "width": self.width,
                "fc_width": self.fc_width,
                "input_size": int(self.spec.input_size),
                "num_classes": 2,
                "init": self.init,
                "dropout": self.dropout,
                "in_channels": int(self.spec.channels),
                "head": self.head,
            }
        return {"weights": self.weights, "num_classes": 2}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["split"] = list(d["split"])
        return d

    def to_toml(self) -> str:
        """TOML text that ``load_recipe(config=...)`` reads back to an equal recipe."""
        d = self.to_dict()
        pre = d.pop("preprocess")
        lines = [f"{k} = {_toml_value(v)}" for k, v in d.items()]
        lines.append("")
        lines.append("[preprocess]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in pre.items() if v is not None]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise RecipeError(f"cannot write {v!r} to TOML")


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(Recipe)}


def parse_value(key: str, text: str, current: Any) -> Any:
    """Parse ``text`` to the type of ``current`` (the field's present value)."""
    t = text.strip()
    try:
        if isinstance(current, bool):
            low = t.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            f = float(t)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(current, float):
            return float(t)
        if isinstance(current, list):
            return [float(x) for x in t.strip("[]").split(",") if x.strip()]
        if current is None:
            return None if t.lower() in ("none", "null", "") else t
        return t
    except ValueError:
        raise RecipeError(f"--set {key}={text}: expected a {type(current).__name__}") from None


def apply_overrides(d: dict[str, Any], overrides: dict[str, Any], source: str) -> None:
    """Merge ``overrides`` (TOML-style nested or dotted keys, already typed) into ``d`` in place."""
    fields = _field_types()
    for key, value in overrides.items():
        if key == "preprocess" and isinstance(value, dict):
            for k, v in value.items():
                apply_overrides(d, {f"preprocess.{k}": v}, source)
            continue
        if key.startswith("preprocess."):
            sub = key.split(".", 1)[1]
            known = {f.name for f in dataclasses.fields(PreprocessSpec)}
            if sub not in known:
                raise RecipeError(f"{source}: unknown preprocess setting {sub!r}; known: {', '.join(sorted(known))}")
            d["preprocess"] = dict(d["preprocess"])
            d["preprocess"][sub] = value
            continue
        if key not in fields:
            raise RecipeError(f"{source}: unknown recipe setting {key!r}; known: {', '.join(sorted(fields))}")
        d[key] = value


def parse_set_args(items: list[str], base: dict[str, Any]) -> dict[str, Any]:
    """``["lr=0.01", "preprocess.input_size=64"]`` -> typed overrides against ``base``."""
    out: dict[str, Any] = {}
    fields = _field_types()
    for item in items:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key.startswith("preprocess."):
            sub = key.split(".", 1)[1]
            defaults = PreprocessSpec().to_dict()
            if sub not in defaults:
                raise RecipeError(f"--set: unknown preprocess setting {sub!r}; known: {', '.join(sorted(defaults))}")
            cur = base["preprocess"].get(sub, defaults[sub])
            if cur is None:
                cur = defaults[sub]
            out[key] = parse_value(key, text, cur)
        elif key in fields:
            out[key] = parse_value(key, text, base[key])
        else:
            raise RecipeError(f"--set: unknown recipe setting {key!r}; known: {', '.join(sorted(fields))}")
    return out


_TYPES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}


def _check_types(d: dict[str, Any]) -> None:
    """Each field has its declared type (TOML ints accepted for floats); one clear error otherwise."""
    for key, f in _field_types().items():
        v = d.get(key)
        want = _TYPES.get(str(f.type))
        if want is None:
            continue
        if isinstance(v, bool) and str(f.type) != "bool" or not isinstance(v, want):
            raise RecipeError(f"recipe setting {key!r} must be a {f.type}, got {v!r}")
        if str(f.type) == "float":
            d[key] = float(v)
    if not isinstance(d.get("split"), list) or not all(isinstance(x, (int, float)) for x in d["split"]):
        raise RecipeError(f"recipe setting 'split' must be a list of three numbers, got {d.get('split')!r}")
    d["split"] = [float(x) for x in d["split"]]
    if not isinstance(d.get("preprocess"), dict):
        raise RecipeError("recipe setting 'preprocess' must be a table of preprocessing settings")


def load_recipe(
    name: str | None = None, config: str | Path | None = None, sets: list[str] | None = None
) -> Recipe:
    """Resolve a recipe: named defaults, then a TOML file, then ``--set`` overrides."""
    d = Recipe(name="custom").to_dict()
    if name is not None:
        if name not in RECIPES:
            raise RecipeError(f"Unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
        apply_overrides(d, dict(RECIPES[name]), f"recipe {name}")
        d["name"] = name
    if config is not None:
        p = Path(config)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecipeError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"{p} is not valid TOML: {exc}") from None
        base_name = data.pop("recipe", None)
        if base_name is not None and name is None:
            if base_name not in RECIPES:
                raise RecipeError(f"{p}: unknown base recipe {base_name!r}")
            apply_overrides(d, dict(RECIPES[base_name]), f"recipe {base_name}")
            d["name"] = base_name
        apply_overrides(d, data, str(p))
    if sets:
        apply_overrides(d, parse_set_args(sets, d), "--set")
    _check_types(d)
    try:
        return Recipe(**d)
    except TypeError as exc:
        raise RecipeError(f"invalid recipe: {exc}") from None
