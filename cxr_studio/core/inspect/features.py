"""What a filter responds to: conv1 weight mosaics and activation maximisation.

Activation maximisation follows the spirit of MATLAB's ``deepDreamImage`` (which the paper used
for its Fig. 2): start from faint noise, climb the gradient of the target's activation over an
image pyramid (coarse octaves first, each octave's result upsampled to start the next), with
Laplacian-pyramid-normalised gradients, random jitter, a light blur and decay towards mid-gray as
regularisers. It is grayscale-aware: ONE gray image is optimised and replicated to the model's
input channels (radiographs are gray), then normalised as the model's preprocessing expects. The
network always sees the full input size (the coarse octaves are upsampled before the forward), so
layers that need a fixed input size (fc layers) work too.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_studio.core.inspect.activations import LayerError, _first_tensor, _model_device, eval_mode, layer_table, resolve_module
from cxr_studio.core.models.discovery import conv_weight
from cxr_studio.core.cancel import Cancelled as _WorkerCancelled
from cxr_studio.core.imaging.spec import NORMALIZATIONS

NORMALISE_MODES = ("filter", "global")
GRAD_NORMS = ("laplacian", "std")
Progress = Callable[[float, str], None]


class Cancelled(_WorkerCancelled):
    """The computation was cancelled through its ``cancel`` event (a ``core.cancel.Cancelled``, the
    class the worker catches, so the worker treats it as every other cancelled job)."""


# -- conv1 mosaic ------------------------------------------------------------------------------
def _first_conv(model: nn.Module) -> torch.Tensor:
    """The weight of the first 2-D convolution (also an exported program's unflattened one)."""
    for name in layer_table(model):
        w = conv_weight(resolve_module(model, name))
        if w is not None:
            return w
    for m in model.modules():
        w = conv_weight(m)
        if w is not None:
            return w
    raise LayerError("The model has no convolution layer to show")


def conv1_mosaic(model: nn.Module, layer: str | None = None, normalise: str = "filter", gap: int = 1) -> np.ndarray:
    """The first conv layer's (or ``layer``'s) filters as a grid of tiles, (H, W, 3) float32 0..1.

    Tiles are RGB when the layer has 3 input channels, else the mean over input channels in gray.
    ``normalise="filter"`` stretches each filter to 0..1 on its own (a constant filter is mid-gray);
    ``"global"`` uses one min/max for all. Tiles are separated by ``gap`` white pixels.
    """
    if normalise not in NORMALISE_MODES:
        raise ValueError(f"Unknown normalisation {normalise!r}; choose one of {NORMALISE_MODES}")
    if layer is None:
        weight = _first_conv(model)
    else:
        conv = resolve_module(model, layer)
        weight = conv_weight(conv)
        if weight is None:
            raise LayerError(f"Layer {layer!r} is a {type(conv).__name__}, not a 2-D convolution")
    w = weight.detach().float().cpu().numpy()  # (O, I, kh, kw)
    tiles = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else np.repeat(w.mean(axis=1)[..., None], 3, axis=3)
    if normalise == "filter":
        lo = tiles.min(axis=(1, 2, 3), keepdims=True)
        hi = tiles.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo, hi = np.full((1, 1, 1, 1), tiles.min()), np.full((1, 1, 1, 1), tiles.max())
    span = hi - lo
    tiles = np.where(span > 1e-12, (tiles - lo) / np.where(span > 1e-12, span, 1.0), 0.5)
    n, kh, kw = tiles.shape[:3]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.ones((rows * kh + (rows - 1) * gap, cols * kw + (cols - 1) * gap, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (kh + gap) : r * (kh + gap) + kh, c * (kw + gap) : c * (kw + gap) + kw] = tiles[i]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# -- activation maximisation ---------------------------------------------------------------------
@dataclass(frozen=True)
class AMSettings:
    """Activation maximisation settings (hashable: part of the cache key)."""

    iterations: int = 40  # gradient steps in total, spread evenly over the octaves
    octaves: int = 3  # pyramid levels, coarsest first
    octave_scale: float = 1.4  # size ratio between consecutive octaves
    lr: float = 0.04  # step per iteration, in gray levels, on the normalised gradient
    jitter: int = 8  # random shift in pixels (both axes) before each forward
    blur_sigma: float = 0.5  # Gaussian blur after each step (pixels at the octave's size); 0 = off
    l2: float = 0.002  # decay towards mid-gray per step (L2 regulariser)
    grad_norm: str = "laplacian"  # "laplacian" (Laplacian pyramid normalisation) or "std"
    size: int | None = None  # image side; None = the model's input size (default_preprocess) or 224
    seed: int = 0  # noise seed of the starting image

    def validate(self) -> None:
        if int(self.iterations) < 1 or int(self.octaves) < 1:
            raise ValueError("iterations and octaves must be at least 1")
        if not float(self.octave_scale) >= 1.0:
            raise ValueError(f"octave_scale must be >= 1, got {self.octave_scale}")
        if not float(self.lr) > 0 or float(self.blur_sigma) < 0 or not 0 <= float(self.l2) < 1:
            raise ValueError("lr must be > 0, blur_sigma >= 0 and l2 in [0, 1)")
        if int(self.jitter) < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        if self.grad_norm not in GRAD_NORMS:
            raise ValueError(f"Unknown gradient normalisation {self.grad_norm!r}; choose one of {GRAD_NORMS}")
        if self.size is not None and not 8 <= int(self.size) <= 4096:
            raise ValueError(f"size must be between 8 and 4096, got {self.size}")


def laplacian_normalise(grad: np.ndarray, levels: int = 4) -> np.ndarray:
    """Split a 2-D gradient into a Laplacian pyramid, scale each band to unit RMS, merge, and
    scale the result to unit RMS (deepdream's ``lap_normalize``): fine and coarse detail then
    grow at the same rate."""
    g = np.asarray(grad, dtype=np.float32)
    bands: list[np.ndarray] = []
    cur = g
    for _ in range(levels - 1):
        if min(cur.shape) < 8:
            break
        lo = cv2.pyrDown(cur)
        bands.append(cur - cv2.pyrUp(lo, dstsize=(cur.shape[1], cur.shape[0])))
        cur = lo
    bands.append(cur)
    bands = [b / max(float(np.sqrt(np.mean(b * b))), 1e-12) for b in bands]
    out = bands[-1]
    for hi in reversed(bands[:-1]):
        out = cv2.pyrUp(out, dstsize=(hi.shape[1], hi.shape[0])) + hi
    return out / max(float(np.sqrt(np.mean(out * out))), 1e-12)


def _input_spec(model: nn.Module, settings: AMSettings) -> tuple[int, int, tuple[Any, Any]]:
    spec = getattr(model, "default_preprocess", None) or {}
    size = int(settings.size or spec.get("input_size", 224))
    channels = spec.get("channels")
    if channels is None:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        channels = convs[0].in_channels if convs else 3
    return size, int(channels), NORMALIZATIONS.get(spec.get("normalization", "none"), (0.0, 1.0))


def octave_sizes(size: int, settings: AMSettings) -> list[int]:
    """Image side of each octave, coarsest first, the last equal to ``size``."""
    o = int(settings.octaves)
    return [max(8, int(round(size / float(settings.octave_scale) ** (o - 1 - i)))) for i in range(o)]


def initial_image(model: nn.Module, settings: AMSettings = AMSettings()) -> np.ndarray:
    """The starting image at full size: faint noise around mid-gray, made at the coarsest octave."""
    size, _, _ = _input_spec(model, settings)
    s0 = octave_sizes(size, settings)[0]
    rng = np.random.default_rng(int(settings.seed))
    start = (0.5 + 0.05 * rng.standard_normal((s0, s0))).astype(np.float32)
    return cv2.resize(start, (size, size), interpolation=cv2.INTER_LINEAR)


class _Stop(Exception):
    pass


PRE_ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)


def _objective(model: nn.Module, module: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
    """Mean activation of channel ``index`` of ``module``'s output (the neuron for fc layers);
    the forward stops right after the layer. For a ReLU layer its input (the pre-activation) is
    used: it has the same maximiser but still has a gradient where the ReLU output is zero."""
    got: dict[str, torch.Tensor | None] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        got["a"] = _first_tensor(out)
        raise _Stop

    def pre_hook(_m: nn.Module, inp: Any) -> None:
        t = _first_tensor(inp)
        got["a"] = None if t is None else t.clone()  # clone: an in-place ReLU would overwrite it
        raise _Stop

    if isinstance(module, PRE_ACTIVATION_TYPES):
        h = module.register_forward_pre_hook(pre_hook)
    else:
        h = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        h.remove()
    a = got.get("a")
    if a is None:
        raise LayerError("The target layer was not run by the model's forward pass")
    if not 0 <= index < a.shape[1]:
        raise ValueError(f"Index {index} does not exist; the layer has {a.shape[1]} channels/neurons")
    return a[0, index].mean()


def _to_input(gray: torch.Tensor, size: int, channels: int, norm: tuple[Any, Any], shift: tuple[int, int]) -> torch.Tensor:
    full = gray[None, None]
    if full.shape[-1] != size:
        full = F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False)
    if shift != (0, 0):  # jitter: shift with mirrored edges (no wrap-around seam)
        p = min(max(abs(shift[0]), abs(shift[1])), size - 1)
        dy, dx = max(-p, min(p, shift[0])), max(-p, min(p, shift[1]))
        full = F.pad(full, (p, p, p, p), mode="reflect")[..., p - dy : p - dy + size, p - dx : p - dx + size]
    x = full.expand(1, channels, size, size)
    mean = torch.as_tensor(norm[0], dtype=x.dtype, device=x.device).reshape(-1, 1, 1)[:channels]
    std = torch.as_tensor(norm[1], dtype=x.dtype, device=x.device).reshape(-1, 1, 1)[:channels]
    return (x - mean) / std


def target_activation(model: nn.Module, layer_name: str, index: int, image: np.ndarray, settings: AMSettings = AMSettings()) -> float:
    """The objective (mean of channel ``index``, or neuron ``index``) for a gray 0..1 image."""
    module = resolve_module(model, layer_name)
    size, channels, norm = _input_spec(model, settings)
    gray = torch.tensor(np.array(image, dtype=np.float32), device=_model_device(model))
    with torch.no_grad(), eval_mode(model):
        return float(_objective(model, module, int(index), _to_input(gray, size, channels, norm, (0, 0))))


def _fingerprint(model: nn.Module) -> tuple:
    """Cheap identity of a model's current weights: object id, storage, version counters and a
    strided sample of every parameter (changes whenever weights are loaded or trained)."""
    parts: list[Any] = [id(model)]
    with torch.no_grad():
        for p in model.parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 64)
            parts.append((p.data_ptr(), p._version, tuple(p.shape), float(flat[::step].double().sum())))
    return tuple(parts)


_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 32


def clear_cache() -> None:
    """Forget every cached activation-maximisation image."""
    with _CACHE_LOCK:
        _CACHE.clear()


def activation_maximisation(
    model: nn.Module,
    layer_name: str,
    channel: int | None = None,
    class_index: int | None = None,
    settings: AMSettings = AMSettings(),
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """A gray (N, N) float32 0..1 image that strongly activates ``channel`` of ``layer_name`` (or,
    for an fc layer, neuron ``class_index`` when ``channel`` is None).

    ``progress(fraction, message)`` is called after every step and with 1.0 at the end; setting
    ``cancel`` raises `Cancelled` before the next step. Results are cached (small LRU) per model
    weights, layer, index and settings; the cached array is read-only and returned as is.
    The model runs in eval mode (each module's mode is restored) and gets no ``.grad``.
    """
    settings.validate()
    index = channel if channel is not None else class_index
    if index is None:
        raise ValueError("Choose a channel (or, for a class neuron of an fc layer, a class index)")
    module = resolve_module(model, layer_name)
    key = (_fingerprint(model), layer_name, int(index), settings)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            if progress is not None:
                progress(1.0, "cached")
            return _CACHE[key]
    result = _optimise(model, module, int(index), settings, progress, cancel)
    result.setflags(write=False)
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    if progress is not None:
        progress(1.0, "done")
    return result


def _optimise(
    model: nn.Module,
    module: nn.Module,
    index: int,
    s: AMSettings,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> np.ndarray:
    size, channels, norm = _input_spec(model, s)
    device = _model_device(model)
    sizes = octave_sizes(size, s)
    per_octave = [len(part) for part in np.array_split(np.arange(int(s.iterations)), len(sizes))]
    rng = np.random.default_rng(int(s.seed) + 1)
    img = cv2.resize(initial_image(model, s), (sizes[0], sizes[0]), interpolation=cv2.INTER_AREA)
    total, done = int(s.iterations), 0
    with eval_mode(model), torch.enable_grad():
        for o, (side, steps) in enumerate(zip(sizes, per_octave)):
            if img.shape[0] != side:
                img = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
            for _ in range(steps):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("Activation maximisation was cancelled")
                j = int(s.jitter)
                shift = (int(rng.integers(-j, j + 1)), int(rng.integers(-j, j + 1))) if j else (0, 0)
                gray = torch.tensor(img, device=device, requires_grad=True)
                obj = _objective(model, module, index, _to_input(gray, size, channels, norm, shift))
                (g,) = torch.autograd.grad(obj, gray, allow_unused=True)
                g = np.zeros_like(img) if g is None else g.detach().cpu().numpy()
                if s.grad_norm == "laplacian":
                    g = laplacian_normalise(g)
                else:
                    g = g / max(float(g.std()), 1e-12)
                img = img + float(s.lr) * g
                img = 0.5 + (img - 0.5) * (1.0 - float(s.l2))
                if s.blur_sigma > 0:
                    img = cv2.GaussianBlur(img, (0, 0), float(s.blur_sigma))
                img = np.clip(img, 0.0, 1.0).astype(np.float32)
                done += 1
                if progress is not None:
                    progress(done / total, f"octave {o + 1}/{len(sizes)}, step {done}/{total}")
    return np.ascontiguousarray(img, dtype=np.float32)


def settings_dict(settings: AMSettings) -> dict[str, Any]:
    """Plain-value form of the settings (for export sidecars)."""
    return asdict(settings)
