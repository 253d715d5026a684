#!/usr/bin/env bash
# The test suite (default: not slow, not gpu, not browser). Extra pytest arguments pass through,
# e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh dev
export HF_HUB_OFFLINE=1
# --durations: the slowest tests of each run in its log, to keep the default run under ~15 minutes.
exec .venv/bin/python -m pytest -q --durations=15 "$@"
