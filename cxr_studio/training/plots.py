"""Training-curve and ROC PNGs drawn with numpy + OpenCV (no matplotlib at runtime)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from ..core.imaging.png import write_png

_COLORS = [(200, 80, 30), (40, 140, 230), (60, 170, 60), (30, 30, 200), (150, 60, 150)]  # BGR


def _panel(
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    size: tuple[int, int] = (480, 360),
    ylim: tuple[float, float] | None = None,
    diagonal: bool = False,
) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 55, 15, 30, 40
    pw, ph = w - left - right, h - top - bottom
    xs = [x for x, _ in series.values() if len(x)]
    ys = [y[np.isfinite(y)] for _, y in series.values() if len(y)]
    x0, x1 = (float(min(a.min() for a in xs)), float(max(a.max() for a in xs))) if xs else (0.0, 1.0)
    if ylim is None:
        allv = np.concatenate(ys) if ys and sum(len(v) for v in ys) else np.array([0.0, 1.0])
        y0, y1 = float(allv.min()), float(allv.max())
    else:
        y0, y1 = ylim
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0

    def px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = left + (x - x0) / (x1 - x0) * pw
        v = top + ph - (y - y0) / (y1 - y0) * ph
        return np.stack([u, v], 1).round().astype(np.int32)

    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for frac in (0.0, 0.5, 1.0):
        yv = y0 + frac * (y1 - y0)
        yy = int(top + ph - frac * ph)
        cv2.putText(img, f"{yv:.3g}", (2, yy + 4), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        xv = x0 + frac * (x1 - x0)
        xx = int(left + frac * pw)
        cv2.putText(img, f"{xv:.3g}", (xx - 10, top + ph + 16), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if diagonal:
        cv2.line(img, tuple(px(np.array([x0]), np.array([y0]))[0]), tuple(px(np.array([x1]), np.array([y1]))[0]),
                 (170, 170, 170), 1, cv2.LINE_AA)
    for i, (name, (x, y)) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        ok = np.isfinite(y)
        if ok.sum() >= 1:
            pts = px(np.asarray(x, float)[ok], np.asarray(y, float)[ok])
            cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
            for p in pts if len(pts) < 80 else []:
                cv2.circle(img, tuple(int(c) for c in p), 2, color, -1)
        cv2.putText(img, name, (left + pw - 120, top + 16 + 16 * i), font, 0.42, color, 1, cv2.LINE_AA)
    return img


def write_png_atomic(path: str | Path, bgr: np.ndarray) -> Path:
    """A figure drawn with OpenCV (BGR) through the one PNG writer."""
    return write_png(path, bgr[..., ::-1] if bgr.ndim == 3 else bgr)


def training_curves_png(history: list[dict], path: str | Path) -> Path:
    """Loss (train/val) beside accuracy/AUC per epoch."""
    ep = np.array([h["epoch"] for h in history], float)

    def col(k: str) -> np.ndarray:
        return np.array([float(h.get(k, np.nan)) for h in history], float)

    loss = _panel({"train loss": (ep, col("train_loss")), "val loss": (ep, col("val_loss"))}, "loss")
    series = {"train acc": (ep, col("train_acc")), "val acc": (ep, col("val_acc")), "val AUC": (ep, col("val_auc"))}
    pointing = col("val_pointing")
    if np.isfinite(pointing).any():  # lesion-guided runs
        series["val pointing"] = (ep, pointing)
    acc = _panel(series, "accuracy / AUC" + (" / pointing game" if len(series) > 3 else ""), ylim=(0.0, 1.0))
    return write_png_atomic(path, np.concatenate([loss, acc], axis=1))


def roc_png(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: str | Path) -> Path:
    img = _panel({f"AUC {auc:.3f}": (np.asarray(fpr), np.asarray(tpr))}, "ROC (x: 1 - specificity, y: sensitivity)",
                 size=(420, 400), ylim=(0.0, 1.0), diagonal=True)
    return write_png_atomic(path, img)
