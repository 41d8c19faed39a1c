"""Confounded phantoms for the lesion-guidance tests: every abnormal training image carries a bright
square marker in its top-left corner (outside the lungs) besides a faint lesion inside a lung, so a
model can tell the classes by the marker alone; the pointing game shows whether its Grad-CAM looks at
the lesion or at the marker."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from cxr_studio.core.models.placement import layer_placement
from cxr_studio.training.guidance import deepest_layer, gradcam_maps
from cxr_studio.training.recipes import Recipe, load_recipe
from cxr_studio.training.tensors import CachedImages

SIZE = 128  # relu5 of cxrnet is 7x7 at 128 px (cells every 8 px, centres 37 ... 85)
LESION_CONTRAST = 0.15


def confounded_phantom(seed: int, abnormal: bool, marker: bool) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, uint8 lesion mask 0/255) of SIZE x SIZE."""
    rng = np.random.default_rng([seed, 7])
    s = SIZE
    base = cv2.GaussianBlur(rng.random((s, s)).astype(np.float32), (0, 0), 3) * 0.4 + 0.15
    lung = np.zeros((s, s), np.uint8)
    cv2.ellipse(lung, (s * 5 // 16, s // 2), (s // 7, s * 5 // 16), 0, 0, 360, 1, -1)
    cv2.ellipse(lung, (s * 11 // 16, s // 2), (s // 7, s * 5 // 16), 0, 0, 360, 1, -1)
    img = base + 0.15 * cv2.GaussianBlur(lung.astype(np.float32), (0, 0), 3)
    lesion = np.zeros((s, s), np.uint8)
    if abnormal:
        ys, xs = np.nonzero(cv2.erode(lung, np.ones((25, 25), np.uint8)))
        k = int(rng.integers(len(ys)))
        cv2.circle(lesion, (int(xs[k]), int(ys[k])), int(rng.integers(8, 12)), 1, -1)
        img = img + LESION_CONTRAST * cv2.GaussianBlur(lesion.astype(np.float32), (0, 0), 1.5)
    if marker:
        img[6:18, 6:18] = 1.0
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), lesion * 255


def write_confounded(root: Path, n: int, seed: int = 0, lesions: bool = True) -> Path:
    """Phantom layout (CXR_png/, lesion_mask/); the marker is on exactly the abnormal images."""
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    if lesions:
        (root / "lesion_mask").mkdir(exist_ok=True)
    for i in range(n):
        label = i % 2
        img, les = confounded_phantom(seed + i, bool(label), marker=bool(label))
        name = f"PH_{i:04d}_{label}"
        cv2.imwrite(str(root / "CXR_png" / f"{name}.png"), img)
        if lesions:
            cv2.imwrite(str(root / "lesion_mask" / f"{name}_lesion.png"), les)
    return root


def phantom_recipe(*sets: str) -> Recipe:
    """Tiny cxrnet (width 0.125, fc 32, one channel) on the 128-px phantoms, Adam, 12 epochs."""
    return load_recipe("demo", sets=[
        "width=0.125", "fc_width=32", f"preprocess.input_size={SIZE}", f"preprocess.intermediate_size={SIZE}",
        "preprocess.segmentation=none", "preprocess.crop=false", "preprocess.clahe=false",
        "preprocess.normalization=none", "preprocess.channels=1", "batch_size=16", "rotation_deg=0",
        "translate_px=3", "optimizer=adam", "lr=0.002", "dropout=0.0", "hflip=false", "pair_batches=false",
        "split=0.75,0.25,0", "epochs=12", *sets,
    ])


def pointing_and_accuracy(model: torch.nn.Module, spec, seed0: int, n: int, tolerance_px: int = 2,
                          confounded: bool = True) -> tuple[float, float]:
    """(pointing game of Grad-CAM at the deepest layer on the abnormal images, accuracy on all) over
    ``n`` fresh phantoms: the marker on the abnormal ones as in training (``confounded``), else on a
    random half regardless of the label. A hit: the peak cell's receptive-field centre lies in the
    lesion grown by ``tolerance_px``."""
    model = model.eval()
    layer = deepest_layer(model)
    place = layer_placement(model, layer)
    module = model.get_submodule(model.layer_names[layer])
    coin = np.random.default_rng(seed0).random(n) < 0.5
    pairs = [confounded_phantom(seed0 + i, bool(i % 2), marker=bool(i % 2) if confounded else bool(coin[i]))
             for i in range(n)]
    labels = [i % 2 for i in range(n)]
    ds = CachedImages(np.stack([p[0] for p in pairs]), labels, spec)
    x, y = ds.__getitems__(list(range(n)))
    acts: dict[str, torch.Tensor] = {}
    hook = module.register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    try:
        logits = model(x)
    finally:
        hook.remove()
    accuracy = float((logits.argmax(1) == y).float().mean())
    sel = y == 1
    cams = gradcam_maps(acts["a"], logits[sel, 1].sum(), create_graph=False)[sel].detach().numpy()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance_px + 1, 2 * tolerance_px + 1))
    hits = []
    for cam, (_, les) in zip(cams, [p for p, lab in zip(pairs, labels) if lab == 1]):
        iy, ix = np.unravel_index(int(np.argmax(cam)), cam.shape)
        py, px = (int(round(place.offset + place.stride * i)) for i in (iy, ix))
        hits.append(bool(cv2.dilate(les, disc)[py, px] > 0))
    return float(np.mean(hits)), accuracy
