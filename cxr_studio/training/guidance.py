"""Lesion guidance: a training loss that makes the model's explanation fall on the lesion.

Forms (``Recipe.lesion_guidance``), each added to the cross-entropy with ``Recipe.lesion_weight``:

- ``gradcam`` (attention penalty in the spirit of GAIN, Li et al. 2018): the Grad-CAM of the
  abnormal class at the deepest conv layer (relu5 for cxrnet), computed inside the training graph
  (``autograd.grad(..., create_graph=True)`` of the class logit w.r.t. the layer's activation: the
  extra backward goes through pool5 and the fc layers only), and the share of its mass outside the
  grown lesion is the penalty, the mass taken as a softmax of the standardised map (``soft_peak``:
  the ReLU'd map's own mass let a model escape by pushing the map below 0 everywhere, which on
  phantoms stopped all learning). Only on abnormal images with a non-empty lesion mask.
- ``input_grad`` ("right for the right reasons", Ross et al. 2017): the share of the squared input
  gradient of the abnormal-vs-normal logit that lies outside the grown lesion (normalised, so the
  weight does not depend on the gradient's scale). Same images as ``gradcam``; the double backward
  runs through the whole network.
- ``seg_head``: an auxiliary 1x1-conv lesion-segmentation head on the layer, trained with binary
  cross-entropy against the grown mask sampled at the cells' receptive-field centres, on every image
  with a lesion mask (a normal phantom's empty mask counts: "no lesion here"). The head lives outside
  the model: its weights go into ``last.pt``'s training state (for ``--resume``) and never into the
  model's state dict, so the saved model is the plain architecture the app loads.

Images without a lesion mask contribute 0 to the term; the term is a per-image mean over the batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..core.models.placement import Placement, layer_placement
from .data import select
from .lesion_cache import LesionCache, LesionImages, grow_masks
from .loops import to_device

_STOP = (nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
_EPS = 1e-8
VAL_TOLERANCE_PX = 8.0  # pointing-game tolerance at 512 px, as cxr-studio-train localize's default
CAM_SHARPNESS = 2.0  # softmax of the standardised Grad-CAM: the top cell of a 7x7 map at 3 sd weighs e^6


def deepest_layer(model: nn.Module) -> str:
    """The last conv-stage layer (conv / activation / norm) before the first pooling-to-vector or fc
    layer, by ``model.layer_names`` order: ``relu5`` for cxrnet."""
    names = getattr(model, "layer_names", None)
    if not isinstance(names, dict):
        raise ValueError("lesion guidance needs a model that names its layers (model.layer_names)")
    last = None
    for name, path in names.items():
        mod = model.get_submodule(path)
        if isinstance(mod, _STOP):
            break
        if isinstance(mod, (nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.SiLU, nn.GELU)):
            last = name
    if last is None:
        raise ValueError("lesion guidance: the model has no conv layer before its classifier")
    return last


def grid_cover(m: torch.Tensor, placement: Placement | None, shape: tuple[int, int]) -> torch.Tensor:
    """(B, n, n) input-sized masks -> (B, h, w): each cell's share of its stride-sized footprint
    around its receptive-field centre that lies in the mask (``placement.sample_on_grid`` in torch)."""
    h, w = int(shape[0]), int(shape[1])
    if placement is None:
        return F.adaptive_avg_pool2d(m[:, None], (h, w))[:, 0]
    k = max(1, int(round(placement.stride)))
    box = F.avg_pool2d(m[:, None], k, stride=1, padding=k // 2, count_include_pad=True)[:, 0] if k > 1 else m
    n = m.shape[-1]
    ys = torch.clamp(torch.round(placement.offset + placement.stride * torch.arange(h, dtype=torch.float64)), 0, n - 1)
    xs = torch.clamp(torch.round(placement.offset + placement.stride * torch.arange(w, dtype=torch.float64)), 0, n - 1)
    return box[:, ys.long().to(m.device)][:, :, xs.long().to(m.device)]


def gradcam_maps(act: torch.Tensor, score: torch.Tensor, create_graph: bool = True,
                 relu: bool = True) -> torch.Tensor:
    """Grad-CAM (B, h, w) of ``score`` (a scalar: the sum of the explained logits) at ``act``
    (before its final ReLU when ``relu`` is False)."""
    (g,) = torch.autograd.grad(score, act, create_graph=create_graph)
    weights = g.float().mean((2, 3), keepdim=True)
    cam = (weights * act.float()).sum(1)
    return F.relu(cam) if relu else cam


def soft_peak(cam: torch.Tensor, sharpness: float = CAM_SHARPNESS) -> torch.Tensor:
    """A map's mass as a distribution over its cells: softmax of the map standardised per image
    (``sharpness`` / its standard deviation). Unlike the ReLU'd map's own mass it never vanishes (a
    model cannot escape the penalty by pushing the map below 0 everywhere) and its gradient does not
    blow up when the map is small; its mode is the map's peak, the cell the pointing game reads."""
    flat = cam.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True).detach() + _EPS)
    return torch.softmax(z * sharpness, 1).view_as(cam)


def outside_share(energy: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Per image, the share of ``energy`` (B, h, w) >= 0 outside ``inside`` (B, h, w) in [0, 1];
    an image whose map is all zero counts as entirely outside (1)."""
    total = energy.sum((1, 2))
    out = (energy * (1.0 - inside)).sum((1, 2))
    return torch.where(total > _EPS, out / (total + _EPS), torch.ones_like(total))


class Guidance:
    """Computes (logits, loss) for one batch with the recipe's lesion term; keeps per-epoch stats."""

    def __init__(self, recipe: Any, model: nn.Module, device: torch.device) -> None:
        self.form = recipe.lesion_guidance
        self.weight = float(recipe.lesion_weight)
        self.layer = recipe.lesion_layer or deepest_layer(model)
        names = getattr(model, "layer_names", {})
        if self.layer not in names:
            raise ValueError(f"lesion_layer {self.layer!r} is not a layer of {type(model).__name__}; "
                             f"known: {', '.join(names)}")
        self.module_name = names[self.layer]
        self.module = model.get_submodule(self.module_name)
        self.placement = layer_placement(model, self.layer)
        self.head: nn.Module | None = None
        if self.form == "seg_head":
            channels = _out_channels(model, self.layer)
            self.head = nn.Conv2d(channels, 1, 1).to(device)
            nn.init.normal_(self.head.weight, 0.0, 0.01)  # not zero: the layer gets a gradient from step 1
            nn.init.constant_(self.head.bias, -2.0)  # start near "no lesion" (most cells)
            if _world_size() > 1:  # the head is outside DDP: average its gradients over the processes here,
                group = dist.new_group()  # in a group of their own so they never interleave with DDP's
                for p in self.head.parameters():
                    p.register_hook(lambda grad, group=group: _mean_over_ranks(grad, group))
        self._act: torch.Tensor | None = None
        self.note = ""  # what setup_guidance has to say about the masks (e.g. ones it could not place)
        self.val_set: Any = None  # validation images with their lesion masks (a LesionImages), for val_pointing
        self._capture = False
        self._hook = self.module.register_forward_hook(self._keep)
        self.reset_stats()

    def _keep(self, _mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if self._capture:
            self._act = out

    def close(self) -> None:
        self._hook.remove()

    # -- stats ------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.term_sum, self.images, self.guided = 0.0, 0, 0

    def stats(self) -> dict[str, float]:
        return {"lesion_term": self.term_sum / max(self.images, 1), "lesion_images": self.guided}

    # -- parameters (seg_head only) ----------------------------------------------------------------
    def param_group(self, lr: float) -> dict[str, Any] | None:
        if self.head is None:
            return None
        return {"params": list(self.head.parameters()), "lr": lr, "name": "lesion_head"}

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict()} if self.head is not None else {}

    def load_state_dict(self, d: dict[str, Any] | None) -> None:
        if self.head is not None and d and "head" in d:
            self.head.load_state_dict(d["head"])

    # -- validation ----------------------------------------------------------------------------------
    def val_pointing(self, model: nn.Module, batch_size: int = 32) -> tuple[float, int]:
        """(pointing game, images) of the abnormal class's Grad-CAM at the guided layer on the validation
        images that are abnormal and have a lesion mask: the share whose peak cell's receptive-field
        centre lies in the lesion grown by ``VAL_TOLERANCE_PX`` (at 512). (nan, 0) without such images."""
        ds = self.val_set
        if ds is None:
            return float("nan"), 0
        idx = [i for i in range(len(ds)) if ds.lesion_index[i] >= 0 and ds.labels[i] == 1]
        was_training = model.training
        model.eval()
        hits = []
        layer = model.get_submodule(self.module_name)  # another copy (the weight average) gets a hook of its own
        extra = None if layer is self.module else layer.register_forward_hook(self._keep)
        try:
            for k in range(0, len(idx), batch_size):
                x, _, m, _ = ds.__getitems__(idx[k:k + batch_size])
                dev = next(model.parameters()).device
                x, m = to_device(x, dev), m.to(dev)
                self._capture = True
                try:
                    with torch.enable_grad():
                        logits = model(x)
                        act, self._act = self._act, None
                        cam = gradcam_maps(act, logits[:, 1].float().sum(), create_graph=False).detach()
                finally:
                    self._capture = False
                h, w = cam.shape[-2:]
                peak = cam.flatten(1).argmax(1)
                ys, xs = self._centres(peak // w, h, m.shape[-1]), self._centres(peak % w, w, m.shape[-1])
                hits += (m[torch.arange(len(m), device=dev), ys, xs] > 0.5).tolist()
        finally:
            model.train(was_training)
            if extra is not None:
                extra.remove()
        return (float(sum(hits)) / len(hits), len(hits)) if hits else (float("nan"), 0)

    def _centres(self, cells: torch.Tensor, count: int, n: int) -> torch.Tensor:
        if self.placement is None:
            c = (cells.double() + 0.5) * (n / count) - 0.5
        else:
            c = self.placement.offset + self.placement.stride * cells.double()
        return torch.clamp(torch.round(c), 0, n - 1).long()

    # -- the loss ------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: Any,
                 loss_fn: Any) -> tuple[torch.Tensor, torch.Tensor]:
        m, has = extra[0].to(x.device, non_blocking=True), extra[1].to(x.device, non_blocking=True)
        if self.form == "input_grad":
            x = x.detach().requires_grad_(True)
        self._capture = True
        try:
            logits = model(x)
        finally:
            self._capture = False
        act, self._act = self._act, None
        loss = loss_fn(logits.float(), y)
        self.last_loss = loss  # train_loss stays the classification loss, comparable with unguided runs
        term = self.term(x, y, m, has, logits, act)
        self.term_sum += float(term.detach()) * y.shape[0]
        self.images += int(y.shape[0])
        return logits, loss + self.weight * term

    def term(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, has: torch.Tensor,
             logits: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
        """The lesion term (a scalar, per-image mean over the batch; 0 when no image qualifies)."""
        b = y.shape[0]
        if self.form == "seg_head":
            sel = has
        else:
            sel = has & (y == 1) & (m.flatten(1).amax(1) >= 0.5)
        k = int(sel.sum())
        self.guided += k
        if k == 0:  # 0, in the graph (DDP expects every parameter, the seg head included, in every step)
            zero = logits.float().sum() * 0.0
            return zero if self.head is None or act is None else zero + self.head(act.float()).sum() * 0.0
        if self.form == "input_grad":
            score = (logits[sel, 1] - logits[sel, 0]).float().sum()
            (g,) = torch.autograd.grad(score, x, create_graph=True)
            energy = g[sel].float().pow(2).sum(1)
            return outside_share(energy, m[sel]).sum() / b
        assert act is not None, "the guided layer did not run"
        inside = grid_cover(m[sel], self.placement, act.shape[-2:])
        if self.form == "gradcam":
            cam = gradcam_maps(act, logits[sel, 1].float().sum(), relu=False)[sel]
            return outside_share(soft_peak(cam), inside).sum() / b
        assert self.head is not None
        seg = self.head(act[sel].float())[:, 0]
        bce = F.binary_cross_entropy_with_logits(seg, inside, reduction="none").mean((1, 2))
        return bce.sum() / b


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _mean_over_ranks(grad: torch.Tensor, group: Any) -> torch.Tensor:
    grad = grad.clone()
    dist.all_reduce(grad, group=group)
    return grad / dist.get_world_size()


def _out_channels(model: nn.Module, layer: str) -> int:
    """Channels of ``layer``'s output: those of the last conv at or before it."""
    ch = None
    for name, path in model.layer_names.items():
        mod = model.get_submodule(path)
        if isinstance(mod, nn.Conv2d):
            ch = mod.out_channels
        if name == layer:
            break
    if ch is None:
        raise ValueError(f"seg_head: no conv layer at or before {layer!r}")
    return int(ch)


def setup_guidance(recipe: Any, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   data: Any, progress: bool = False) -> Guidance | None:
    """For a recipe with guidance: the training set gets its lesion masks (``data.train`` becomes a
    ``LesionImages``), the optimizer the seg head's parameters; returns the ``Guidance`` (None when off)."""
    if recipe.lesion_guidance == "none":
        return None

    train_samples = select(data.samples, data.split["train"])
    cache = LesionCache(data.cache)
    index, masks = cache.load_all(train_samples, progress=progress)
    failed = list(cache.failed)
    masks = grow_masks(masks, recipe.lesion_grow_px * data.cache.size / 512.0)
    data.train = LesionImages.wrap(data.train, index, masks)
    g = Guidance(recipe, model, device)
    if len(data.val):
        v_index, v_masks = cache.load_all(select(data.samples, data.split["val"]), progress=progress)
        failed += cache.failed
        g.val_set = LesionImages.wrap(data.val, v_index, grow_masks(v_masks, VAL_TOLERANCE_PX * data.cache.size / 512.0))
    if failed:
        g.note = (f"; {len(failed)} lesion mask(s) could not be placed and those images train unguided "
                  f"(first: {failed[0]})")
    group = g.param_group(recipe.lr)
    if group is not None:
        optimizer.add_param_group(group)
    return g
