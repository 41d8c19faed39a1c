#!/bin/bash
# The CUDA checks, in one run on a machine with an NVIDIA GPU (its own python3 with torch): the GPU
# tests (-m gpu), the CPU-vs-GPU benchmarks, then the core and training suites on that machine.
# Wheels of what its image lacks (pydicom, grad-cam, ttach) may wait in .whl/.
#     bash benchmarks/cuda_check.sh [OUTDIR]
set -o pipefail
OUTDIR=${1:-${OUT:-/tmp/cuda_check}}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-compile -e . >/dev/null || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
echo "== GPU tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/core tests/training 2>&1 | tee "$OUTDIR/gpu-tests.log" | tail -25
echo "== inference: CPU vs GPU"
timeout 150 python3 benchmarks/bench_cuda.py --repeats 3 2>&1 | tee "$OUTDIR/bench-cuda.log"
echo "== training throughput (cxrnet-tb-guided's model, 227 px)"
for args in "--device cpu --threads $(nproc) --n 128" "--device cuda --n 1024" "--device cuda --amp --n 1024" \
            "--device cuda --amp --n 1024 --workers 4"; do
    timeout 120 python3 benchmarks/bench_training.py --recipe cxrnet-tb-guided --batch 32 --repeats 3 $args 2>&1 \
        | tee -a "$OUTDIR/bench-training.log" | grep -v "^ratio ours+aug"
done
echo "== lesion guidance step cost"
for args in "--device cuda" "--device cuda --amp"; do
    timeout 60 python3 benchmarks/bench_guidance.py --batch 32 --repeats 10 $args 2>&1 | tee -a "$OUTDIR/bench-guidance.log"
done
echo "== core and training suites on this machine"
timeout "${SUITE_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider -n 8 tests/core tests/training 2>&1 \
    | tee "$OUTDIR/suite.log" | tail -30
