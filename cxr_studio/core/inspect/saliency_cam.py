"""Class-activation maps of one layer, on that layer's grid (place them with
`placement.place_on_input`): the paper's strongest channel, and the CAM family.

- ``channel-max`` / ``channel-lungs``: the layer's strongest channel, ranked by its maximum / by its
  mean inside the lung mask (`activations.rank_channels`), scaled 0..1 (`saliency.channel_map`).
- ``gradcam`` / ``gradcam++``: ours (`saliency.grad_cam`, numerically pytorch-grad-cam's and faster:
  see ``benchmarks/bench_inspection.py``).
- ``hirescam``, ``scorecam``, ``layercam``, ``eigencam``: pytorch-grad-cam itself (the ``grad-cam``
  package), asked for the map at the layer's own resolution instead of stretched over the input.
  The library is imported on first use; without it these four raise one clear `SaliencyError`.

Every function leaves the caller's model as it was: eval mode only during the call (each module's
flag restored), hooks removed, no ``.grad`` left on parameters.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from cxr_studio.core.inspect.activations import LayerError, as_batch, eval_mode, forward_with_activations, rank_channels, resolve_module
from cxr_studio.core.inspect.saliency import _scale_like_reference, channel_map, grad_cam
from cxr_studio.core.cancel import Cancelled

LIBRARY_CAMS = {"hirescam": "HiResCAM", "scorecam": "ScoreCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM"}
SCORECAM_BATCH = 32  # masked copies of the input per forward pass


class SaliencyError(ValueError):
    """A saliency method that cannot run here (unknown name, missing library, missing lung mask)."""


def _library() -> Any:
    try:
        import pytorch_grad_cam  # optional here: a missing grad-cam is a SaliencyError, not a failed import
    except ImportError:
        raise SaliencyError(
            "HiResCAM, Score-CAM, LayerCAM and EigenCAM come from pytorch-grad-cam, which is not installed: "
            "pip install 'grad-cam>=1.5.7' (a dependency of cxr-studio)") from None
    return pytorch_grad_cam


def strongest_channel_map(model: nn.Module, x: Any, layer: str, by: str = "max", *, geometry: Any = None,
                          lung_mask: np.ndarray | None = None, placement: Any = None) -> tuple[np.ndarray, int]:
    """(grid map 0..1, channel) of ``layer``'s strongest channel ranked ``by`` "max" or "lungs"."""
    act = forward_with_activations(model, x, [layer]).activations[layer]
    if act.ndim != 3:
        raise LayerError(f"Layer {layer!r} is not spatial (output {act.shape}); pick a conv or ReLU layer")
    if by == "lungs" and lung_mask is None:
        raise SaliencyError("channel-lungs ranks channels inside the lungs and needs a lung mask; none was given")
    ch = rank_channels(act, by, geometry=geometry, lung_mask=lung_mask, placement=placement)[0][0]
    return channel_map(act, ch), int(ch)


@contextlib.contextmanager
def _quiet_scorecam(lib: Any, progress: Any = None, cancel: Any = None) -> Iterator[None]:
    """Score-CAM draws a tqdm bar over its batches of masked inputs; swap the module's tqdm
    reference meanwhile for a loop that reports ``progress(done, total)`` and raises `Cancelled`
    between batches when ``cancel`` (an Event) is set."""
    mod = lib.score_cam
    saved = mod.tqdm

    def steps(it: Any) -> Iterator[Any]:
        items = list(it)
        for i, item in enumerate(items):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Score-CAM was cancelled")
            yield item
            if progress is not None:
                progress(i + 1, len(items))

    class _NoBar:
        @staticmethod
        def tqdm(it: Any, *a: Any, **k: Any) -> Any:
            return steps(it)

    mod.tqdm = _NoBar
    try:
        yield
    finally:
        mod.tqdm = saved


def library_cam(model: nn.Module, x: Any, layer: str, method: str, class_index: int,
                batch_size: int = SCORECAM_BATCH, progress: Any = None, cancel: Any = None) -> np.ndarray:
    """pytorch-grad-cam's ``method`` (a `LIBRARY_CAMS` key) for batch item 0 and ``class_index``,
    as an (h, w) grid map in 0..1 (the library's min-max scaling, without its resize). Score-CAM
    reports ``progress(done, total)`` per batch and stops between batches on ``cancel``."""
    if method not in LIBRARY_CAMS:
        raise SaliencyError(f"{method!r} is not a pytorch-grad-cam method here; "
                            f"choose one of {', '.join(LIBRARY_CAMS)}")
    lib = _library()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = resolve_module(model, layer)
    batch = as_batch(model, x)[:1].detach()
    grads = {id(p): p.grad for p in model.parameters()}
    flags = {id(p): p.requires_grad for p in model.parameters()}
    try:
        with eval_mode(model), torch.enable_grad(), _quiet_scorecam(lib, progress, cancel):
            cam = getattr(lib, LIBRARY_CAMS[method])(model=model, target_layers=[module])
            try:
                cam.batch_size = int(batch_size)
                cam.get_target_width_height = lambda _t: None  # keep the layer's own grid
                out = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(class_index))])
            finally:
                cam.activations_and_grads.release()
    except IndexError:
        raise SaliencyError(f"Class index {class_index} does not exist for this model") from None
    finally:
        for p in model.parameters():
            p.grad = grads[id(p)]
            p.requires_grad_(flags[id(p)])
    m = np.asarray(out[0], dtype=np.float32)
    if m.ndim != 2:
        raise LayerError(f"{method} needs a layer with spatial output (N, C, h, w); {layer!r} is not one")
    return _scale_like_reference(np.nan_to_num(m))


def cam_grid(model: nn.Module, x: Any, layer: str, method: str, class_index: int, *, geometry: Any = None,
             lung_mask: np.ndarray | None = None, placement: Any = None,
             batch_size: int = SCORECAM_BATCH, progress: Any = None,
             cancel: Any = None) -> tuple[np.ndarray, int | None]:
    """(grid map 0..1, channel or None) of one layer method of `saliency_methods.LAYER_METHODS`."""
    if method == "channel-max":
        return strongest_channel_map(model, x, layer, "max")
    if method == "channel-lungs":
        return strongest_channel_map(model, x, layer, "lungs", geometry=geometry, lung_mask=lung_mask,
                                     placement=placement)
    if method in ("gradcam", "gradcam++"):
        return grad_cam(model, x, layer, int(class_index), plus=method == "gradcam++", grid=True), None
    return library_cam(model, x, layer, method, class_index, batch_size, progress, cancel), None
