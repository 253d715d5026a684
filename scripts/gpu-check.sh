#!/usr/bin/env bash
# The GPU check in one call (benchmarks/gpu_check.py): export, gate, pick, load and serve on a CUDA card held
# to 4 GiB; writes gpu-check.json and gpu-check.md to $OUT (or --out). Arguments pass through, e.g.
#   bash scripts/gpu-check.sh                      # a CUDA machine: tiny and 0.6B shapes
#   bash scripts/gpu-check.sh --device cpu         # the same logic on a CPU, tiny model (CI runs it)
#   bash scripts/gpu-check.sh --prepare            # here, before lending a GPU machine with no network:
#       copies the 0.6B config and tokenizer from ../shared into benchmarks/out/fixture-0.6b and downloads
#       the wheels the serve step needs (fastapi, uvicorn, psutil for CPython 3.12) into
#       benchmarks/out/wheels; carry both folders to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p benchmarks/out
  rm -rf benchmarks/out/fixture-0.6b && cp -r ../shared/fixtures/qwen3-reranker-0.6b benchmarks/out/fixture-0.6b
  "$py" -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d benchmarks/out/wheels fastapi uvicorn psutil
  du -sh benchmarks/out/fixture-0.6b benchmarks/out/wheels
  exit 0
fi

if [ -d benchmarks/out/wheels ] && ! "$py" -c "import fastapi, uvicorn, psutil" 2>/dev/null; then
  "$py" -m pip install -q --no-index --find-links benchmarks/out/wheels fastapi uvicorn psutil \
    || echo "gpu-check: could not install the carried wheels; the serve step will say so"
fi
# Under 8 minutes in all: a run cut short still leaves what it measured (the driver writes as it goes).
exec timeout "${GPU_CHECK_TIMEOUT:-470}" "$py" benchmarks/gpu_check.py --out "${OUT:-benchmarks/out/gpu-check}" "$@"
