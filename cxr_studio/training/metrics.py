"""Classification metrics for two classes (abnormal = positive): accuracy, AUC, sensitivity,
specificity, confusion matrix, ROC curve. Plain numpy, no scikit-learn."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with ties handled as one step; starts at (0, 0), ends at (1, 1)."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], int)
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    p, n = max(int(y.sum()), 0), max(int(len(y) - y.sum()), 0)
    tpr = np.r_[0.0, tps / p] if p else np.r_[0.0, np.zeros(len(tps))]
    fpr = np.r_[0.0, fps / n] if n else np.r_[0.0, np.zeros(len(fps))]
    thr = np.r_[np.inf, s[distinct]] if len(s) else np.array([np.inf])
    return fpr, tpr, thr


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count 1/2); NaN with only one class."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises sensitivity + specificity - 1 (Youden's J) on these
    images; the lowest such threshold when several tie. NaN with only one class."""
    y = np.asarray(labels).astype(int)
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    fpr, tpr, thr = roc_curve(y, scores)
    j = (tpr - fpr)[1:]  # skip the (0, 0) start, whose threshold is +inf
    return float(thr[1:][np.flatnonzero(j == j.max())[-1]])


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """``probs`` = probability of class 1 (abnormal). Returns plain types (JSON-ready)."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else float("nan"),
        "auc": auc_score(y, p),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        # rows = true class (normal, abnormal), columns = predicted class
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": threshold,
    }


def auc_interval(labels: np.ndarray, scores: np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling positives and negatives separately (so
    every resample keeps both classes, in the original numbers). (NaN, NaN) with one class."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    p = pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))]
    q = neg[rng.integers(0, len(neg), size=(n_boot, len(neg)))]
    # Mann-Whitney per resample: P(pos > neg) + 0.5 P(pos == neg), by broadcasting in chunks
    aucs = np.empty(n_boot)
    for i in range(0, n_boot, 256):
        a, b = p[i:i + 256, :, None], q[i:i + 256, None, :]
        aucs[i:i + 256] = ((a > b).mean(axis=(1, 2)) + 0.5 * (a == b).mean(axis=(1, 2)))
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)
