"""The fit command under torch.distributed.run with 2 CPU processes (gloo on loopback)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from train_helpers import TINY_SETS, write_shenzhen

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_fit(tmp_path) -> None:
    data = write_shenzhen(tmp_path / "S", 24)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "cxr_studio.training.cli", "fit", "--recipe", "demo", "--data", str(data), "--out", str(out),
           "--no-progress", "--device", "cpu", *TINY_SETS, "--set", f"cache_dir={tmp_path / 'cache'}",
           "--set", "epochs=2", "--set", "max_steps_per_epoch=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["provenance"]["world_size"] == 2
    assert ck["training_state"]["epoch"] == 2
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3
    assert "18 train" in r.stderr
    # DistributedSampler: rank 0 trained on its half (9 of 18: a batch of 8, then 1), not 2 x 8
    rows = [line.split(",") for line in (out / "log.csv").read_text().strip().splitlines()]
    col = rows[0].index("train_images")
    assert [int(r[col]) for r in rows[1:]] == [9, 9]
