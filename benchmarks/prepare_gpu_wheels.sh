#!/usr/bin/env bash
# Wheels the GPU suite needs on a machine that cannot reach a package registry: PyAV (decoding, and
# the FFmpeg libraries TorchCodec loads there, benchmarks/pyav_ffmpeg.py) and TorchCodec (CUDA
# build, for torch >= 2.11), for its Python (PY, default 3.12). Run here, from the repo root, then
# copy .whl/ (about 45 MB; ignored by git) to the GPU machine with the repo and run the suite there:
#   bash benchmarks/prepare_gpu_wheels.sh && OUT=results bash benchmarks/gpu_suite.sh   # (there)
set -euo pipefail
PY=${PY:-3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "av==18.1.0" "torchcodec==0.17.0"
ls -la .whl
