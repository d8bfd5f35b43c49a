#!/usr/bin/env bash
# Everything GPU-related in one call, on a GPU machine without network that has
# CuPy 14 (CUDA 13), PyTorch, Cython and nvcc:
#   bash bench/gpu_all.sh            # results under $OUT (default ./gpu-results)
# Installs fastmom from this checkout, runs the gpu-marked tests and the GPU benchmark
# table, prints the H100 model (bench/gpu_model.py, from the stored emulation counts)
# with the measured step times beside it, and writes every log, table (.md/.json) and
# nvidia-smi output under $OUT.
# A failing step is logged and the later steps still run; the exit status is that of
# the first failure.
set -uo pipefail

OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
status=0

step() {  # step NAME CMD...: run, log to $OUT/NAME.log, remember the first failure
    local name="$1"
    shift
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.log"
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
    return 0
}

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git rev-parse HEAD 2>/dev/null || true
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
    nvcc --version || true
    "$PY" -c "import sys, numpy, cupy, torch; print(sys.version); print('numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, torch.version.cuda)" || true
} >"$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

step install "$PY" -m pip install --no-build-isolation --no-deps .
# (at most 8 files come back from a lent machine's $OUT: keep the count at 8)
step gpu-tests "$PY" -m pytest -m gpu -v -rs tests/backends/test_cuda_gpu.py bench/test_bench_gpu.py
step cpu-cuda-tests "$PY" -m pytest -q -rs tests/backends/test_cuda_compile.py tests/backends/test_cuda_emulation.py tests/backends/test_cuda_memory.py tests/backends/test_cuda_nvrtc.py
step bench "$PY" -m bench.gpu_table --out "$OUT"
# the model adds no file (8 at most come back): it goes to summary.txt, the measured step times beside it
echo "== model: $PY -m bench.gpu_model --measured $OUT/gpu_table.json" | tee -a "$OUT/summary.txt"
"$PY" -m bench.gpu_model --measured "$OUT/gpu_table.json" 2>&1 | tee -a "$OUT/summary.txt"

echo "== done, status $status; results in $OUT" | tee -a "$OUT/summary.txt"
ls -l "$OUT"
exit $status
