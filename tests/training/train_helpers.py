"""Small synthetic datasets for the trainer tests: fast to write, easy to learn.

Normal images are smooth noise; abnormal ones add a bright disc (the "lesion") inside the left
or right half. Images are 96 px so the smallest cxrnet input (91) fits.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from cxr_studio.training.recipes import Recipe, load_recipe

SIZE = 96


def blob_image(seed: int, abnormal: bool, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 image, uint8 lung mask, uint8 lesion mask)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 3) * 0.5 + 0.2
    lung = np.zeros((size, size), np.uint8)
    cv2.ellipse(lung, (size // 3, size // 2), (size // 7, size // 3), 0, 0, 360, 255, -1)
    cv2.ellipse(lung, (2 * size // 3, size // 2), (size // 7, size // 3), 0, 0, 360, 255, -1)
    lesion = np.zeros((size, size), np.uint8)
    if abnormal:
        cx = int(rng.choice([size // 3, 2 * size // 3]))
        cy = int(rng.integers(size // 3, 2 * size // 3))
        cv2.circle(lesion, (cx, cy), size // 10, 255, -1)
        base = np.where(lesion > 0, 0.95, base)
    return (np.clip(base, 0, 1) * 255).astype(np.uint8), lung, lesion


def write_shenzhen(root: Path, n: int, seed: int = 0, masks: bool = True, lesions: bool = False,
                   prefix: str = "CHNCXR") -> Path:
    """NLM Shenzhen layout (phantom layout when ``lesions``): CXR_png, mask/, lesion_mask/."""
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % 2
        img, lung, les = blob_image(seed + i, bool(label))
        name = f"{prefix}_{i:04d}_{label}"
        cv2.imwrite(str(root / "CXR_png" / f"{name}.png"), img)
        if masks:
            (root / "mask").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "mask" / f"{name}_mask.png"), lung)
        if lesions:
            (root / "lesion_mask").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "lesion_mask" / f"{name}_lesion.png"), les)
    return root


def write_montgomery(root: Path, n: int, seed: int = 100, readings: bool = True) -> Path:
    for sub in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = i % 2
        img, lung, _ = blob_image(seed + i, bool(label))
        name = f"MCUCXR_{i:04d}_{label}.png"
        cv2.imwrite(str(root / "CXR_png" / name), img)
        left = lung.copy()
        left[:, : SIZE // 2] = 0
        right = lung.copy()
        right[:, SIZE // 2 :] = 0
        cv2.imwrite(str(root / "ManualMask" / "leftMask" / name), left)
        cv2.imwrite(str(root / "ManualMask" / "rightMask" / name), right)
        if readings:
            (root / "ClinicalReadings").mkdir(exist_ok=True)
            (root / "ClinicalReadings" / f"MCUCXR_{i:04d}_{label}.txt").write_text(f"Patient's Sex: F\nreading {i}\n")
    return root


def tiny_recipe(*sets: str, base: str = "demo") -> Recipe:
    """A recipe for 96-px test images: cxrnet at 1/8 width, 91-px input, no segmentation."""
    return load_recipe(base, sets=[
        "width=0.125", "fc_width=32", "preprocess.input_size=91", "preprocess.intermediate_size=96",
        "preprocess.segmentation=none", "preprocess.crop=false", "preprocess.clahe=false",
        "batch_size=8", "rotation_deg=0", "translate_px=2", "optimizer=sgd", "lr=0.01", "dropout=0.0",
        "hflip=false", "preprocess.normalization=none", *sets,
    ])


TINY_SETS = [
    "--set", "width=0.125", "--set", "fc_width=32", "--set", "preprocess.input_size=91",
    "--set", "preprocess.intermediate_size=96", "--set", "preprocess.segmentation=none",
    "--set", "preprocess.crop=false", "--set", "preprocess.clahe=false", "--set", "batch_size=8",
    "--set", "rotation_deg=0", "--set", "translate_px=2", "--set", "optimizer=sgd", "--set", "lr=0.01",
    "--set", "dropout=0.0", "--set", "hflip=false", "--set", "preprocess.normalization=none",
]


def log_rows(run: Path) -> list[dict]:
    """A run folder's log.csv, one dict per epoch (values as written: strings)."""
    with open(Path(run) / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))
