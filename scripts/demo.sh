#!/usr/bin/env bash
# The main job on the embedded default model, offline: build the tiny random-weight Qwen3 reranker,
# export every artifact format, gate each on parity, and report what each deployment target would load.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh cpu,serve
export HF_HUB_OFFLINE=1
exec .venv/bin/rerank-export build recipes/tiny-demo.toml --out artifacts/ "$@"
