"""Inspection on a CUDA GPU (run where one is lent; skipped elsewhere): every saliency method gives
the CPU's map, and ``cxr-studio export --device cuda`` with the shipped TB model (lung U-Net, model,
heatmap) gives the CPU's probabilities and maps."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_studio.batch import main
from cxr_studio.core.imaging.io import write_png
from cxr_studio.core.inspect.saliency_methods import METHODS, Options, saliency_map
from cxr_studio.core.phantoms.phantom import make_phantom

from test_saliency_methods import corr, tiny_net  # noqa: E402 - tests/core is on sys.path

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


# channel-lungs is channel-max's ranking restricted to a lung mask of the radiograph (none here)
@pytest.mark.parametrize("method", [m for m in METHODS if m != "channel-lungs"])
def test_each_method_on_cuda_gives_the_cpu_map(method):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    net = tiny_net()
    opts = Options(occlusion_window=8, occlusion_stride=4, ig_steps=16)
    layer = None if method in ("occlusion", "integrated-gradients") else "relu2"
    cpu = saliency_map(net, x, method, layer, 1, options=opts).map_input
    gpu = saliency_map(tiny_net().cuda(), x.cuda(), method, layer, 1, options=opts).map_input
    assert isinstance(gpu, np.ndarray) and gpu.shape == cpu.shape
    assert np.isfinite(gpu).all()
    if np.ptp(cpu) > 0:
        assert corr(cpu, gpu) > 0.99, method
    else:
        assert np.ptp(gpu) < 1e-4, method


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("phantoms")
    for seed in range(2):
        write_png(d / f"phantom_{seed}.png", make_phantom(seed, size=512).image)
    return d


def _rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["status"] == "ok"]


@pytest.mark.parametrize("method", ["activation", "gradcam"])
def test_export_with_the_shipped_model_on_cuda_matches_the_cpu(images, tmp_path, method):
    outs = {}
    for dev in ("cpu", "cuda"):
        outs[dev] = tmp_path / dev
        assert main(["--out", str(outs[dev]), "--device", dev, "--method", method, "--no-progress", str(images)]) == 0
    cpu, gpu = _rows(outs["cpu"]), _rows(outs["cuda"])
    assert len(cpu) == len(gpu) == 2
    for a, b in zip(cpu, gpu):
        assert abs(float(a["p_tuberculosis"]) - float(b["p_tuberculosis"])) < 0.01
        assert (a["layer"], a["predicted"]) == (b["layer"], b["predicted"]) or abs(float(a["p_tuberculosis"]) - 0.5) < 0.01
    for npy in sorted(outs["cpu"].glob("*.npy")):
        m_cpu, m_gpu = np.load(npy), np.load(outs["cuda"] / npy.name)
        assert m_cpu.shape == m_gpu.shape and corr(m_cpu, m_gpu) > 0.99, npy.name
