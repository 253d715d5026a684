#!/usr/bin/env bash
# The main job on the embedded default model, offline: build a tiny random-weight Qwen3 reranker,
# export its artifacts, gate them on parity, and show which one each target would load.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh cpu,serve
export HF_HUB_OFFLINE=1
.venv/bin/rerank-export tiny --out artifacts/tiny-model
.venv/bin/rerank-export baseline --model artifacts/tiny-model --out artifacts/ --dtype bf16 --dtype fp32
.venv/bin/rerank-export parity artifacts/ --model artifacts/tiny-model
