"""Lung segmentation benchmark on the real NLM sets: Dice per set and seconds per image.

    python benchmarks/bench_lungs.py [--data ../shared/data/nlm-tb] [--n N] [--methods heuristic,atlas,otsu]
    python benchmarks/bench_lungs.py --full-size-timing   # U-Net on a 4892x4020 radiograph, resizing included

For each set (Montgomery: leftMask + rightMask merged; Shenzhen: mask/) the images with a mask are
sorted by name and split: even positions form the atlas, odd positions are scored, so no image is
ever both. ``--n`` limits the scored images per set (default: all). Every method scores the same
images. "otsu" is the baseline the issue quotes (Otsu threshold, two largest dark components);
"unet" and "auto" are added when ``cxr_studio.core.lungs.unet`` exists. Times are wall-clock per
image on this machine, also given as a ratio to the otsu baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_studio.core.lungs import dice, segment_lungs  # noqa: E402
from cxr_studio.core.lungs.atlas import Atlas, segment_atlas  # noqa: E402
from cxr_studio.core.lungs.atlas_io import list_atlas_pairs, read_gray, read_mask  # noqa: E402
from cxr_studio.core.lungs.heuristic import segment_heuristic  # noqa: E402
from cxr_studio.core.lungs.postprocess import largest_components  # noqa: E402

SETS = {"Montgomery": "MontgomerySet", "Shenzhen": "ChinaSet_AllFiles"}


def otsu_baseline(pixels: np.ndarray) -> np.ndarray:
    """Plain Otsu threshold, dark side, two largest components, holes filled."""
    u8 = np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    from scipy import ndimage as ndi

    return ndi.binary_fill_holes(largest_components(u8 <= t, 2, 0.0))


def load_set(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for img_path, mask_paths in list_atlas_pairs(folder):
        img = read_gray(img_path)
        m = np.zeros(img.shape, bool)
        for mp in mask_paths:
            m |= read_mask(mp, img.shape)
        out.append((img_path.name, img, m))
    return out


def segmenter_test_names(data: Path) -> set[str]:
    """File names of the shipped segmenter's test split (recomputed from its recorded seed)."""
    from cxr_studio.core.lungs.unet import load_segmenter
    from cxr_studio.training.segmenter_data import find_mask_pairs, split_pairs

    seed = int(load_segmenter().provenance.get("seed") or 0)
    return {p.image.name for p in split_pairs(find_mask_pairs([data]), seed)["test"]}


def full_size_timing(data: Path, repeats: int = 9) -> None:
    """U-Net segmentation of a full-size 16-bit radiograph (a real image upsampled to the Montgomery
    scanner's 4892x4020), resizing included; baseline: one cv2.resize of it to 1024 in the same run."""
    from cxr_studio.core.lungs.unet import load_segmenter, segment_unet

    name, img, _ = load_set(data / SETS["Montgomery"])[0]
    big = cv2.resize(img.astype(np.float32), (4020, 4892), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    loaded = load_segmenter()
    segment_unet(big, loaded)  # warm-up

    def median_s(fn) -> float:
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts))

    unet = median_s(lambda: segment_unet(big, loaded))
    base = median_s(lambda: cv2.resize(big, (1024, 1024), interpolation=cv2.INTER_AREA))
    print(f"{name} upsampled to {big.shape[1]}x{big.shape[0]}: U-Net {unet * 1000:.1f} ms "
          f"(target < 150 ms), one cv2.resize to 1024 {base * 1000:.1f} ms, ratio {unet / base:.1f}x "
          f"(median of {repeats}, {load_segmenter().spec.input_size} px model)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "nlm-tb")
    ap.add_argument("--n", type=int, default=0, help="scored images per set (0: all of the test half)")
    ap.add_argument("--methods", default="otsu,heuristic,atlas", help="comma-separated list")
    ap.add_argument("--k", type=int, default=None, help="atlas images registered per patient")
    ap.add_argument("--segmenter-split", action="store_true",
                    help="score the shipped U-Net's held-out test images (its seeded split) and build the"
                         " atlas from all the others, so no method is scored on an image it learned from")
    ap.add_argument("--full-size-timing", action="store_true", help="only time the U-Net on a full-size image")
    args = ap.parse_args(argv)
    if args.full_size_timing:
        full_size_timing(args.data)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if importlib.util.find_spec("cxr_studio.core.lungs.unet") is not None:
        methods += [m for m in ("unet", "auto") if m not in methods]
    if not all((args.data / d).is_dir() for d in SETS.values()):
        print(f"NLM data not found under {args.data}", file=sys.stderr)
        return 2

    rows = []
    for set_name, sub in SETS.items():
        t0 = time.perf_counter()
        data = load_set(args.data / sub)
        train, test = data[0::2], data[1::2]
        if args.segmenter_split:
            held_out = segmenter_test_names(args.data)
            train = [d for d in data if d[0] not in held_out]
            test = [d for d in data if d[0] in held_out]
        if args.n:
            test = test[:: max(1, len(test) // args.n)][: args.n]
        atlas = Atlas.from_pairs([d[1] for d in train], [d[2] for d in train], [d[0] for d in train])
        print(f"{set_name}: {len(data)} images with masks, atlas {len(atlas)}, scored {len(test)};"
              f" loading + atlas build {time.perf_counter() - t0:.1f} s", flush=True)
        kw = {} if args.k is None else {"k": args.k}
        fns = {
            "otsu": otsu_baseline,
            "heuristic": segment_heuristic,
            "atlas": lambda px: segment_atlas(px, atlas, **kw),
            "unet": lambda px: segment_lungs(px, method="unet"),
            "auto": lambda px: segment_lungs(px, method="auto"),
        }
        for method in methods:
            if method not in fns:
                print(f"unknown method {method!r}; known: {', '.join(fns)}", file=sys.stderr)
                return 2
            scores, t = [], 0.0
            worst = []
            try:
                fns[method](test[0][1])  # warm-up (model/atlas caches); also tells if it can run
            except ValueError as exc:
                print(f"  {method:9s} skipped: {exc}", flush=True)
                continue
            for name, img, truth in test:
                t1 = time.perf_counter()
                mask = fns[method](img)
                t += time.perf_counter() - t1
                scores.append(dice(mask, truth))
                worst.append((scores[-1], name))
            s = np.array(scores)
            rows.append((set_name, method, s.mean(), np.median(s), s.min(), t / len(test), sorted(worst)[:3]))
            print(f"  {method:9s} mean {s.mean():.4f}  median {np.median(s):.4f}  min {s.min():.3f}"
                  f"  {t / len(test):.3f} s/img", flush=True)

    base = {r[0]: r[5] for r in rows if r[1] == "otsu"}
    print("\n| set | method | mean Dice | median | min | s/image | time vs otsu | worst |")
    print("|---|---|---|---|---|---|---|---|")
    for set_name, method, mean, med, mn, sec, worst in rows:
        ratio = f"{sec / base[set_name]:.1f}x" if set_name in base and base[set_name] > 0 else "-"
        w = ", ".join(f"{n} {d:.2f}" for d, n in worst)
        print(f"| {set_name} | {method} | {mean:.4f} | {med:.4f} | {mn:.3f} | {sec:.3f} | {ratio} | {w} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
