"""Sanity checks of saliency methods (Adebayo et al., NeurIPS 2018): does the map change when the
model's weights are randomised?

Cascading randomisation re-initialises the parameterised layers from the top (the classifier) down,
one more at each step; independent randomisation re-initialises one layer at a time. Each step is
compared with the trained model's map by Spearman rank correlation and SSIM (both maps resampled to
`COMPARE_SIDE` squared). A method passes when the Spearman correlation falls below `PASS_SPEARMAN`
once every layer down to the explained layer (the conv that produces it; for input methods, the
deepest conv) is randomised. A constant map carries no ranking: its Spearman correlation counts as 0.
Layers are re-initialised with their own ``reset_parameters`` (PyTorch's default initialiser) under
a fixed seed; the caller's model is never modified (each step works on a copy).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch
from torch import nn
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from cxr_studio.core.inspect.activations import layer_table

PASS_SPEARMAN = 0.5
COMPARE_SIDE = 64


def parameter_layers(model: nn.Module) -> list[tuple[str, str]]:
    """(readable name, module path) of the layers holding their own parameters, in forward order."""
    out = []
    for name, path in layer_table(model).items():
        mod = model.get_submodule(path)
        if any(True for _ in mod.parameters(recurse=False)):
            out.append((name, path))
    return out


def explained_step(model: nn.Module, layer: str | None) -> str:
    """The parameterised layer whose randomisation must break a map of ``layer``: the last one at or
    before ``layer`` in forward order (the deepest conv for input methods, ``layer`` None)."""
    table = list(layer_table(model))
    params = [n for n, _ in parameter_layers(model)]
    if not params:
        raise ValueError("the model has no parameterised layers to randomise")
    if layer is None:
        convs = [n for n, p in parameter_layers(model) if isinstance(model.get_submodule(p), nn.Conv2d)]
        return convs[-1] if convs else params[-1]
    stop = table.index(layer) if layer in table else len(table) - 1
    before = [n for n in params if table.index(n) <= stop]
    return before[-1] if before else params[0]


def _randomise(module: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                p.normal_(0.0, 0.01)


def cascade(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """(layer randomised last, model copy with it and every layer above randomised), top down."""
    layers = parameter_layers(model)
    m = copy.deepcopy(model).eval()
    for i, (name, path) in enumerate(reversed(layers)):
        _randomise(m.get_submodule(path), seed + i)
        yield name, m


def independent(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """(layer, model copy with only that layer randomised), top down."""
    for i, (name, path) in enumerate(reversed(parameter_layers(model))):
        m = copy.deepcopy(model).eval()
        _randomise(m.get_submodule(path), seed + i)
        yield name, m


def _small(m: np.ndarray) -> np.ndarray:
    return cv2.resize(np.asarray(m, np.float32), (COMPARE_SIDE, COMPARE_SIDE), interpolation=cv2.INTER_AREA)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (0 when either is constant)."""
    x, y = _small(a).ravel(), _small(b).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y)[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two 0..1 maps."""
    return float(structural_similarity(_small(a), _small(b), data_range=1.0))


def _crop(support: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    if support is None or not np.asarray(support).any():
        return lambda a: a
    ys, xs = np.nonzero(support)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return lambda a: np.asarray(a)[y0:y1, x0:x1]


def sanity_check(model: nn.Module, map_fn: Callable[[nn.Module], np.ndarray], layer: str | None,
                 seed: int = 0, support: np.ndarray | None = None) -> dict[str, Any]:
    """Run ``map_fn(model) -> (N, N) map`` on the trained model and every randomisation step.
    Maps are compared inside the bounding box of ``support`` (e.g. `saliency_methods.map_support`).
    Returns the per-step scores and the verdict at the explained layer's cascade step."""
    crop = _crop(support)
    inner = map_fn
    map_fn = lambda m: crop(inner(m))  # noqa: E731
    ref = map_fn(model)
    stop = explained_step(model, layer)
    casc, indep = [], []
    for name, m in cascade(model, seed):
        mm = map_fn(m)
        casc.append({"layer": name, "spearman": spearman(ref, mm), "ssim": ssim(ref, mm)})
    for name, m in independent(model, seed):
        mm = map_fn(m)
        indep.append({"layer": name, "spearman": spearman(ref, mm), "ssim": ssim(ref, mm)})
    at = next(s for s in casc if s["layer"] == stop)
    return {"explained_layer": stop, "spearman_randomised": at["spearman"], "ssim_randomised": at["ssim"],
            "passes": bool(at["spearman"] < PASS_SPEARMAN), "cascade": casc, "independent": indep}


def randomised_model(model: nn.Module, layer: str | None, seed: int = 0) -> tuple[str, nn.Module]:
    """(explained layer, a copy of ``model`` with every parameterised layer from the top down to it
    randomised): the cascade step at which a faithful map of ``layer`` must have changed."""
    stop = explained_step(model, layer)
    for name, m in cascade(model, seed):
        if name == stop:
            return name, m
    raise ValueError(f"no randomisation step reaches {stop!r}")  # unreachable: stop is a cascade layer


def compare(trained: np.ndarray, randomised: np.ndarray, support: np.ndarray | None = None) -> dict[str, Any]:
    """Spearman, SSIM and the verdict of one trained-vs-randomised pair of maps (inside ``support``)."""
    crop = _crop(support)
    a, b = crop(trained), crop(randomised)
    rho = spearman(a, b)
    return {"spearman_randomised": rho, "ssim_randomised": ssim(a, b), "passes": bool(rho < PASS_SPEARMAN)}
