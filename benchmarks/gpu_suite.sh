#!/usr/bin/env bash
# All GPU benchmarks in one go (one device lease). Run from the repo root:
#   OUT=results bash benchmarks/gpu_suite.sh
# Needs torch with CUDA and PyAV (a wheel in .whl/ is installed to /tmp/site if present).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
run() { local name=$1; shift; echo "=== $name: $*"; timeout "${LIMIT:-150}" "$@" 2>&1 | tail -n 25 | tee "$OUT/$name.txt"; }
run model_bf16_b8 python3 benchmarks/bench_model.py --device cuda --batch 8 --dtype bfloat16 --repeats 5 --compile
run roi_bf16_b8 python3 benchmarks/bench_roi.py --device cuda --batch 8 --dtype bfloat16
run model_fp32_b2 python3 benchmarks/bench_model.py --device cuda --batch 2 --dtype float32 --repeats 5
run train python3 benchmarks/bench_train.py --device cuda --quick
run proposals python3 benchmarks/bench_proposals.py --device cuda --quick --end-to-end
