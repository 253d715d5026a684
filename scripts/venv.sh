#!/usr/bin/env bash
# Create (or reuse) .venv/ in the repo root and install rerank-export with the given extras.
# torch==2.13.0 goes in first: on this project's machines it is a CPU build that lies on disk, while a
# bare `torch` resolved from nothing pulls a multi-GB CUDA build. Users elsewhere keep pyproject's range.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,serve}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')-$(sha256sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  touch "$stamp"
fi
