#!/usr/bin/env bash
# All GPU benchmarks in one go (one device lease), about 8 minutes on an H200. From the repo root:
#   OUT=results bash benchmarks/gpu_suite.sh          # on the GPU machine
#   bash benchmarks/gpu_suite.sh --dry-run            # print the steps, run nothing
#   bash benchmarks/gpu_suite.sh --cpu                # the new steps at small sizes on the CPU (a check)
# Needs torch with CUDA and PyAV; wheels in .whl/ (benchmarks/prepare_gpu_wheels.sh: PyAV, TorchCodec)
# are installed to /tmp/site. Steps past BUDGET seconds (default 480) are skipped, each step stops at its
# own limit. First the suite as it stood (model, RoIAlign, training loop, proposals), then: the bf16 and
# decoding tests on CUDA, Joint GCN training through `strg train` with real decoding at 64 clips per
# step, inference clips/s, the loader with TorchCodec's CUDA decoder, the large-batch training loop on
# in-memory clips, training with GPU decoding, and inference with the model compiled whole.
set -u
export PYTHONUNBUFFERED=1
MODE=gpu
case "${1:-}" in --dry-run) MODE=dry ;; --cpu) MODE=cpu ;; "") ;; *) echo "unknown option $1" >&2; exit 2 ;; esac
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-480}; START=$(date +%s)
if [ "$MODE" = gpu ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
# TorchCodec finds FFmpeg's libraries: the system's, else PyAV's bundled ones under their standard names
if [ "$MODE" = gpu ] && ! ldconfig -p 2>/dev/null | grep -q libavcodec; then
  LIBS=$(python3 benchmarks/pyav_ffmpeg.py /tmp/pyav_ffmpeg) && export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if [ "$MODE" = gpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
[ "$MODE" = dry ] || python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)
from strg.data.decode import torchcodec_available, torchcodec_cuda_problem
print('torchcodec usable:', torchcodec_available(), '| on the GPU:', torchcodec_cuda_problem() or 'yes')" | tee -a "$OUT/gpu.txt"
# run NAME LIMIT_S CMD...: within the budget left, output kept in $OUT/NAME.txt
run() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$MODE" = dry ]; then echo "=== $name (limit ${limit} s): $*"; return; fi
  if [ "$left" -lt 30 ]; then echo "=== $name: skipped, ${left} s of the budget left" | tee "$OUT/$name.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit} s, $(( $(date +%s) - START )) s in): $*"
  timeout "$limit" "$@" 2>&1 | tail -n 25 | tee "$OUT/$name.txt"
}
if [ "$MODE" != cpu ]; then
  LIMIT=${LIMIT:-150}
  # the suite as it stood
  run model_bf16_b8 "$LIMIT" python3 benchmarks/bench_model.py --device cuda --batch 8 --dtype bfloat16 --repeats 5 --compile
  run roi_bf16_b8 "$LIMIT" python3 benchmarks/bench_roi.py --device cuda --batch 8 --dtype bfloat16
  run model_fp32_b2 "$LIMIT" python3 benchmarks/bench_model.py --device cuda --batch 2 --dtype float32 --repeats 5
  run train "$LIMIT" python3 benchmarks/bench_train.py --device cuda --quick
  run proposals "$LIMIT" python3 benchmarks/bench_proposals.py --device cuda --quick --end-to-end
  # new: tests that run their CUDA cases here, then the measurements
  run tests_cuda 90 python3 -m pytest -q -x tests/test_region_bf16.py tests/test_data_decode.py
  run train_e2e_b64 150 python3 benchmarks/bench_train_e2e.py --device cuda --workers 14
  run inference_b32 60 python3 benchmarks/bench_inference.py --device cuda --batch 32
  run loader_nvdec 150 python3 benchmarks/bench_loader.py --device cuda --quick --workers 0,8 --clips 32 \
    --backends pyav,torchcodec,torchcodec-cuda --source-size 480x640 --reencode
  run train_b64_memory 120 python3 benchmarks/bench_train.py --device cuda --batch 64 --batch-per-device 64 --iterations 6 --workers 12
  run train_e2e_b64_nvdec 120 python3 benchmarks/bench_train_e2e.py --device cuda --decode-backend torchcodec-cuda --workers 0
  run inference_b32_compiled 180 python3 benchmarks/bench_inference.py --device cuda --batch 32 --compile --repeats 5
else
  # the new steps at CPU sizes: they parse, run and print their tables
  run tests_cpu 120 python3 -m pytest -q -x tests/test_region_bf16.py tests/test_data_decode.py
  run train_e2e 150 python3 benchmarks/bench_train_e2e.py --quick
  run inference 90 python3 benchmarks/bench_inference.py --quick --frames 4 --size 64
  run loader 240 python3 benchmarks/bench_loader.py --quick --workers 0 --clips 8 --backends pyav,torchcodec,auto-cuda \
    --source-size 480x640 --reencode
fi
echo "suite done in $(( $(date +%s) - START )) s"
