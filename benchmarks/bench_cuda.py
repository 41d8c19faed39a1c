"""What a CUDA GPU buys the workstation: the shipped TB model (resources/models/cxrnet-tb.pt, cxrnet
227 px) loaded by the app's ModelManager and explained on a phantom radiograph, each step on the CPU
(the baseline, all of this machine's cores) and on the GPU in the same process; medians, runs of the
two devices alternating. Prints the device, each time and the ratio GPU / CPU (below 1: the GPU wins).

    python benchmarks/bench_cuda.py [--repeats 5] [--threads N]

Training throughput on the GPU: benchmarks/bench_training.py --device cuda [--amp] and
benchmarks/bench_guidance.py --device cuda [--amp].
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch


def median_time(fn: Callable[[], object], dev: torch.device, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU (cpu: a smoke run)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: nothing to compare")
    from cxr_studio.core.pipeline import preprocess
    from cxr_studio.core.inspect.activations import forward_with_activations
    from cxr_studio.core.inspect.saliency_methods import Options, saliency_map
    from cxr_studio.core.phantoms.phantom import make_phantom
    from cxr_studio.core.resources import TB_MODEL, find_resource
    from cxr_studio.core.runtime.device import describe_device
    from cxr_studio.core.runtime.engine import ModelManager

    path = find_resource(TB_MODEL)
    cuda = torch.device(a.device)
    d = describe_device(cuda)
    print(f"{d['name']}, {d.get('memory_total', 0) / 2**30:.0f} GiB; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; {path.name}; median of {a.repeats}")
    managers = {"cpu": ModelManager("cpu"), "cuda": ModelManager(cuda)}
    ids = {k: m.load(path) for k, m in managers.items()}
    spec = managers["cpu"].get(ids["cpu"]).spec
    x_cpu = preprocess(make_phantom(7, 1024, abnormal=True).radiograph(), spec).tensor()
    xs = {"cpu": x_cpu, "cuda": x_cpu.to(cuda)}

    def load(dev: str) -> Callable[[], object]:
        def run() -> None:
            managers[dev].unload(managers[dev].load(path, model_id="bench"))
        return run

    def forward(dev: str) -> Callable[[], object]:
        model = managers[dev].get(ids[dev]).model
        return lambda: forward_with_activations(model, xs[dev], ["relu5"])

    def method(name: str, layer: str | None) -> Callable[[str], Callable[[], object]]:
        def make(dev: str) -> Callable[[], object]:
            model = managers[dev].get(ids[dev]).model
            return lambda: saliency_map(model, xs[dev], name, layer, 1, options=Options())
        return make

    steps = {
        "load checkpoint": load,
        "forward + relu5 activations": forward,
        "Grad-CAM relu5": method("gradcam", "relu5"),
        "Score-CAM relu5": method("scorecam", "relu5"),
        "occlusion": method("occlusion", None),
        "integrated gradients": method("integrated-gradients", None),
    }
    for name, make in steps.items():
        t_cpu = median_time(make("cpu"), torch.device("cpu"), a.repeats)
        t_gpu = median_time(make("cuda"), cuda, a.repeats)
        print(f"  {name:<28} cpu {t_cpu * 1000:9.1f} ms   {a.device} {t_gpu * 1000:8.1f} ms   ratio {t_gpu / t_cpu:.3f}")


if __name__ == "__main__":
    main()
