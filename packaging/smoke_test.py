"""Smoke test of a built CXR Studio bundle (or of any installed `cxr-studio`).

    python packaging/smoke_test.py                       # the bundle in dist/cxr-studio/
    python packaging/smoke_test.py --bundle /tmp/dist/cxr-studio --first-window
    python packaging/smoke_test.py --app .venv/bin/cxr-studio --train .venv/bin/cxr-studio-train

Checks, each printed as PASS/FAIL with its wall and CPU time:
  0. (bundle only) `cxr-studio --check-install`: the start-up check finds no packaging problem
     (a demo model or segmenter that is not trained yet is only a warning);
  1. the app started with `--demo --screenshot PNG` (offscreen Qt) exits 0 and the PNG shows a
     heatmap: enough saturated, several-hued (jet) pixels in the middle of the window, where the
     radiograph is; a plain grey radiograph has none there;
  2. the bundled trainer's `--help` lists its subcommands, and `models` builds the architectures
     (torch works inside the bundle);
  3. with --first-window (needs Xvfb and xwininfo): seconds from launch until the main window is
     mapped on a virtual X display.
Exit status 0 when every check passed. Needs numpy and Pillow (not Qt) in the Python running it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The image view (fractions of width, height) in the default layout, left of the colour bar and
# above the filters panel: the radiograph and its heatmap, no other jet-coloured widget.
CENTRE_BOX = (0.19, 0.05, 0.69, 0.68)
MIN_HEAT_FRACTION = 0.002  # ~700 pixels of a 1500x1100 window: a small heat spot
MIN_HUE_FAMILIES = 2


def _hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in degrees (0 red, 60 yellow, 120 green, 180 cyan, 240 blue) of an (..., 3) array."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    d = np.maximum(mx - mn, 1e-6)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h * 60.0


def heatmap_evidence(png: Path) -> dict[str, float]:
    """Share of saturated pixels in the window's centre and how many jet hue families they cover
    (blue, cyan-green, yellow-red)."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255.0
    h, w, _ = rgb.shape
    x0, y0, x1, y1 = CENTRE_BOX
    box = rgb[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]
    mx, mn = box.max(axis=2), box.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    heat = (sat >= 0.4) & (mx >= 0.25)
    hue = _hue_degrees(box)[heat]
    counts = [int(((hue >= lo) & (hue < hi)).sum()) for lo, hi in ((180, 270), (90, 180), (0, 90))]
    counts[2] += int((hue >= 330).sum())  # deep red wraps around
    n = int(heat.sum())
    return {"fraction": n / heat.size,
            "hue_families": float(sum(c >= max(1, 0.05 * n) for c in counts))}


def _env(home: Path, platform: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"QT_QPA_PLATFORM": platform, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_CACHE_HOME": str(home / ".cache")})
    env.pop("CXR_STUDIO_RESOURCES", None)  # the bundle must find its own resources
    return env


def _children_cpu() -> float:
    """CPU seconds used so far by finished child processes (user + system)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds a running process has used (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _report(name: str, ok: bool, seconds: float, detail: str, cpu: float = float("nan")) -> bool:
    """One result line: wall seconds, and CPU seconds (steadier than wall time on a busy machine)."""
    cpu_text = "" if cpu != cpu else f" ({cpu:5.1f} s CPU)"
    print(f"{'PASS' if ok else 'FAIL'}  {name:<26} {seconds:6.1f} s{cpu_text}  {detail}", flush=True)
    return ok


def check_install(app: list[str], work: Path, timeout: float) -> bool:
    """The bundle's own start-up check (`--check-install`): packaging problems fail, models that are
    not trained yet only warn."""
    t0 = time.perf_counter()
    p = subprocess.run(app + ["--check-install"], env=_env(work, "offscreen"), capture_output=True, text=True,
                       timeout=timeout)
    problems = [line[4:] for line in p.stdout.splitlines() if line.startswith("  - ")]
    if p.returncode not in (0, 1) or (p.returncode == 1 and not problems):
        return _report("check-install", False, time.perf_counter() - t0,
                       f"exit {p.returncode}: {' | '.join((p.stdout + p.stderr).strip().splitlines()[-3:])}")
    fatal = [q for q in problems if "models/" not in q]
    for q in problems:
        print(f"      {'problem' if q in fatal else 'warning'}: {q}")
    return _report("check-install", not fatal, time.perf_counter() - t0,
                   f"{len(fatal)} packaging problem(s), {len(problems) - len(fatal)} missing model(s)")


def check_screenshot(app: list[str], work: Path, timeout: float) -> bool:
    """Run the demo with --screenshot and look for a heatmap in the PNG."""
    png = work / "demo.png"
    t0, c0 = time.perf_counter(), _children_cpu()
    try:
        p = subprocess.run(app + ["--demo", "--screenshot", str(png)], env=_env(work, "offscreen"),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _report("demo --screenshot", False, time.perf_counter() - t0, f"no exit within {timeout:.0f} s")
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    for line in p.stderr.splitlines():
        if "incomplete" in line or line.lstrip().startswith("- ") or "Error" in line:
            print(f"      app: {line}")
    if p.returncode != 0 or not png.is_file():
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        return _report("demo --screenshot", False, dt, f"exit {p.returncode}, PNG written: {png.is_file()}; {tail}",
                       cpu)
    ev = heatmap_evidence(png)
    ok = ev["fraction"] >= MIN_HEAT_FRACTION and ev["hue_families"] >= MIN_HUE_FAMILIES
    return _report("demo --screenshot heatmap", ok, dt,
                   f"{ev['fraction']:.1%} jet pixels in the centre (need {MIN_HEAT_FRACTION:.1%}), "
                   f"{ev['hue_families']:.0f} hue families (need {MIN_HUE_FAMILIES}); {png}", cpu)


def check_trainer(train: list[str], work: Path, timeout: float) -> bool:
    """`--help` lists the subcommands; `models` builds every architecture."""
    t0, c0 = time.perf_counter(), _children_cpu()
    p = subprocess.run(train + ["--help"], env=_env(work, "offscreen"), capture_output=True, text=True,
                       timeout=timeout)
    wanted = ["usage: cxr-studio-train", "fit", "eval", "phantoms"]
    missing = [w for w in wanted if w not in p.stdout]
    ok = _report("trainer --help", p.returncode == 0 and not missing, time.perf_counter() - t0,
                 f"exit {p.returncode}" + (f", missing {missing}" if missing else ", subcommands listed"),
                 _children_cpu() - c0)
    t0, c0 = time.perf_counter(), _children_cpu()
    p = subprocess.run(train + ["models"], env=_env(work, "offscreen"), capture_output=True, text=True,
                       timeout=timeout)
    ok_models = p.returncode == 0 and "cxrnet" in p.stdout
    detail = f"exit {p.returncode}" + ("" if ok_models else f": {' | '.join(p.stderr.strip().splitlines()[-2:])}")
    return _report("trainer models", ok_models, time.perf_counter() - t0, detail, _children_cpu() - c0) and ok


def _free_display() -> int:
    for n in range(90, 140):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :139")


def check_first_window(app: list[str], work: Path, timeout: float) -> bool:
    """Seconds from launch until a window titled 'CXR Studio' is mapped on an Xvfb display."""
    if not (shutil.which("Xvfb") and shutil.which("xwininfo")):
        return _report("first window (Xvfb)", False, 0.0, "Xvfb or xwininfo not installed")
    display = f":{_free_display()}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = None
    try:
        env = _env(work, "xcb")
        env["DISPLAY"] = display
        deadline = time.time() + 10
        while subprocess.run(["xwininfo", "-root"], env=env, capture_output=True).returncode != 0:
            if time.time() > deadline:
                return _report("first window (Xvfb)", False, 0.0, "Xvfb did not start")
            time.sleep(0.1)
        t0 = time.perf_counter()
        proc = subprocess.Popen(app + ["--demo"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        while time.perf_counter() - t0 < timeout:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout
            if '"CXR Studio' in tree:
                return _report("first window (Xvfb)", True, time.perf_counter() - t0, f"display {display}",
                               _process_cpu(proc.pid))
            if proc.poll() is not None:
                err = " | ".join((proc.stderr.read() if proc.stderr else "").strip().splitlines()[-2:])
                return _report("first window (Xvfb)", False, time.perf_counter() - t0,
                               f"app exited {proc.returncode}: {err}")
            time.sleep(0.05)
        return _report("first window (Xvfb)", False, time.perf_counter() - t0, "no window")
    finally:
        for p in (proc, xvfb):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Smoke test of a built CXR Studio bundle.")
    ap.add_argument("--bundle", type=Path, default=REPO / "dist" / "cxr-studio",
                    help="one-folder bundle holding cxr-studio and cxr-studio-train (default: dist/cxr-studio)")
    ap.add_argument("--app", help="app command instead of the bundle's (e.g. .venv/bin/cxr-studio)")
    ap.add_argument("--train", help="trainer command instead of the bundle's")
    ap.add_argument("--first-window", action="store_true", help="also time the first window under Xvfb")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for each run")
    ap.add_argument("--keep", type=Path, help="folder to keep the screenshot in (default: a temporary one)")
    args = ap.parse_args(argv)
    app = [args.app] if args.app else [str(args.bundle / "cxr-studio")]
    train = [args.train] if args.train else [str(args.bundle / "cxr-studio-train")]
    for exe in (app[0], train[0]):
        if shutil.which(exe) is None:
            print(f"smoke_test: {exe} is not an executable; build the bundle first (packaging/build.sh).",
                  file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="cxr-smoke-") as tmp:
        work = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        results = []
        if not args.app:  # --check-install belongs to the bundle's launcher
            results.append(check_install(app, work, args.timeout))
        results += [check_screenshot(app, work, args.timeout), check_trainer(train, work, args.timeout)]
        if args.first_window:
            results.append(check_first_window(app, work, args.timeout))
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
