"""Start-up: seconds from launching the process to the first window on screen (shown and painted),
for `cxr-studio` (the welcome window; torch and the models load behind its "loading" state) and for
a bare PySide6 window started the same way (a fresh Python process). Also when torch has finished
loading (the app's worker attached), for reference.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_startup.py [--runs 3]

Reports the medians and the ratio app / bare. Numbers depend on the machine's load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BARE = r"""
import sys, time
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(["bare"])
w = QMainWindow(); w.resize(800, 600); w.show(); w.repaint(); app.processEvents()
print("SHOWN", time.time(), flush=True)
"""

APP = r"""
import sys, time
from PySide6.QtCore import QTimer
import cxr_studio.gui.main_window as mw

real_show, real_attach = mw.MainWindow.show, mw.MainWindow.attach_engine

def show(self):
    real_show(self)
    self.repaint()
    print("SHOWN", time.time(), flush=True)

def attach(self, worker, manager):
    real_attach(self, worker, manager)
    print("READY", time.time(), flush=True)
    QTimer.singleShot(0, self.close)

mw.MainWindow.show, mw.MainWindow.attach_engine = show, attach
from cxr_studio.gui.app import main
sys.exit(main([]))
"""


def run(code: str) -> dict[str, float]:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
               CXR_STUDIO_SETTINGS=os.path.join(tempfile.mkdtemp(), "bench.ini"))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    marks = {}
    for line in out.stdout.splitlines():
        name, _, value = line.partition(" ")
        if name in ("SHOWN", "READY"):
            marks[name] = float(value) - t0
    if "SHOWN" not in marks:
        raise SystemExit(f"no window appeared:\n{out.stderr[-2000:]}")
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    bare = [run(BARE)["SHOWN"] for _ in range(args.runs)]
    app = [run(APP) for _ in range(args.runs)]
    b = statistics.median(bare)
    shown = statistics.median(m["SHOWN"] for m in app)
    ready = statistics.median(m.get("READY", float("nan")) for m in app)
    print(f"bare PySide6 window:        {b:.2f} s")
    print(f"cxr-studio first window:    {shown:.2f} s   (ratio {shown / b:.1f}x the bare window)")
    print(f"cxr-studio torch loaded:    {ready:.2f} s   (the 'loading' state ends)")


if __name__ == "__main__":
    main()
