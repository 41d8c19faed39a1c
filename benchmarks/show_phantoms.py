"""Write a contact sheet of phantoms (normal and each lesion type, lesions outlined) and print
generation speed against a baseline measured in the same run.

    .venv/bin/python benchmarks/show_phantoms.py /tmp/phantoms.png [--size 512] [--tile 256]
        [--seed 0] [--cols 4] [--no-outline]

Baseline: a 512x512 float32 Gaussian blur (sigma 8) plus one normal draw, the cheapest
image-sized work a generator could do; the ratio says how many such passes a phantom costs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)  # CPU time then equals one core's work

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cxr_studio.core.phantoms.phantom import LESION_TYPES, make_phantom  # noqa: E402


def tile(seed: int, size: int, tsize: int, lesion: str | None, outline: bool) -> np.ndarray:
    """One phantom as an RGB tile: lung outline green, lesion outline red, caption."""
    ph = make_phantom(seed, size, abnormal=lesion is not None,
                      lesion_types=[lesion] if lesion else None)
    g = cv2.resize((ph.image * 255).astype(np.uint8), (tsize, tsize), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if outline:
        for m, col in ((ph.lung_mask, (80, 200, 80)), (ph.lesion_mask, (40, 40, 255))):
            mm = cv2.resize(m.astype(np.uint8), (tsize, tsize), interpolation=cv2.INTER_NEAREST)
            cs, _ = cv2.findContours(mm, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, cs, -1, col, 1, cv2.LINE_AA)
    text = f"{lesion or 'normal'} s{seed}"
    cv2.putText(rgb, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 220, 255), 1, cv2.LINE_AA)
    return rgb


def sheet(seed: int, size: int, tsize: int, cols: int, outline: bool) -> np.ndarray:
    kinds: list[str | None] = [None, None, None, *LESION_TYPES]
    kinds = kinds[: max(cols * 2, len(kinds))]
    while len(kinds) % cols:
        kinds.append(None)
    tiles = [tile(seed + i, size, tsize, k, outline) for i, k in enumerate(kinds)]
    rows = [np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)]
    return np.vstack(rows)


def bench(size: int, reps: int = 20) -> None:
    """Wall and CPU time per phantom against the baseline, both measured here and now (the CPU
    figure is the one to trust on a shared, loaded machine)."""
    rng = np.random.default_rng(0)

    def timed(fn) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        for i in range(reps):
            fn(i)
        return (time.perf_counter() - w) / reps, (time.process_time() - c) / reps

    make_phantom(0, size)  # warm-up
    bw, bc = timed(lambda i: cv2.GaussianBlur(rng.standard_normal((size, size), np.float32), (0, 0), 8))
    pw, pc = timed(lambda i: make_phantom(1000 + i, size))
    print(f"size {size}: phantom wall {pw * 1e3:.1f} ms / cpu {pc * 1e3:.1f} ms; baseline wall "
          f"{bw * 1e3:.2f} ms / cpu {bc * 1e3:.2f} ms; ratio (cpu) {pc / bc:.1f}x")


def contrast_stats(size: int = 512, n: int = 30) -> None:
    """Per lesion type: change inside the lesion mask against the same seed's normal image
    (|delta|) and the lesion against a ring of lung around it (local contrast)."""
    for kind in LESION_TYPES:
        delta, local, area = [], [], []
        for seed in range(500, 500 + n):
            ab = make_phantom(seed, size, lesion_types=[kind])
            no = make_phantom(seed, size, abnormal=False)
            m = ab.lesion_mask
            r = max(3, int(0.02 * size))
            ring = cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
            ring &= ~m & ab.lung_mask
            delta.append(abs(float(ab.image[m].mean() - no.image[m].mean())))
            local.append(abs(float(ab.image[m].mean() - ab.image[ring].mean())) if ring.any() else 0)
            area.append(100.0 * m.sum() / m.size)
        q = lambda v: " / ".join(f"{x:.3f}" for x in np.percentile(v, [0, 50, 100]))  # noqa: E731
        print(f"{kind:14s} |delta| min/med/max {q(delta)}   local {q(local)}   "
              f"area% {q(area)}")


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve by ranks (ties averaged)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    for v in np.unique(score):  # average tied ranks
        ranks[score == v] = ranks[score == v].mean()
    pos = label == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def trivial_auc(size: int = 256, n: int = 300) -> None:
    """How well do global statistics separate abnormal from normal phantoms? Near 0.5 means the
    label needs looking at the lesions, not at a shortcut."""
    feats, labels = [], []
    for seed in range(n):
        ph = make_phantom(seed, size)
        lung = ph.image[ph.lung_mask]
        feats.append([lung.mean(), lung.std(), np.percentile(lung, 99), ph.image.mean()])
        labels.append(ph.label)
    f, y = np.asarray(feats), np.asarray(labels)
    names = ("lung mean", "lung std", "lung p99", "image mean")
    print(f"trivial features, AUC abnormal vs normal ({n} phantoms, {y.mean():.2f} abnormal): "
          + ", ".join(f"{nm} {_auc(f[:, i], y):.3f}" for i, nm in enumerate(names)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--no-outline", action="store_true")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--contrast", action="store_true", help="print lesion contrast statistics")
    ap.add_argument("--trivial", action="store_true",
                    help="print how well global image statistics predict the label (AUC)")
    args = ap.parse_args()
    img = sheet(args.seed, args.size, args.tile, args.cols, not args.no_outline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise SystemExit(f"could not encode {args.out}")
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(args.out)
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]})")
    if args.contrast:
        contrast_stats(args.size)
    if args.trivial:
        trivial_auc()
    if not args.no_bench:
        bench(512)
        bench(1024, reps=5)


if __name__ == "__main__":
    main()
