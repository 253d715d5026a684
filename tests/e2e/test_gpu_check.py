"""The GPU check's logic on a CPU, every submission: the same script a CUDA machine runs (scripts/gpu-check.sh),
on the tiny model, with the formats that run on a CPU and a simulated OOM (a CPU has no allocator cap)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_export.formats import FORMATS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.needs_fixtures]


def test_the_gpu_check_runs_on_a_cpu(tmp_path):
    env_python = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu-check.sh"), "--device", "cpu", "--docs", "10",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env={**env_python, "HOME": str(Path.home())}, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    tiny = results["shapes"]["tiny"]
    assert "error" not in tiny
    # baseline-fp16 runs on CUDA only (the registry), so a CPU run exports and gates the other two.
    assert tiny["gate"]["skipped"] == ["baseline-fp16"]
    assert tiny["gate"]["verdicts"] == {"baseline-bf16": "pass", "awq-int4": "pass"}
    assert tiny["chosen"] in tiny["gate"]["formats"] and tiny["chosen"] in tiny["pick"]
    for fmt, row in tiny["artifacts"].items():
        assert "error" not in row, (fmt, row)
        assert row["docs"] == 10 and row["long_doc_scored"] and row["pairs_per_s"] > 0
        assert row["estimate_bytes"] > 0 and row["peak_allocated_bytes"] > 0
        backoff = row["oom_backoff"]
        assert backoff["retries"] > 0 and not backoff["real"]
        # Smaller batches after the back-off: the same scores, within the format's batch limit.
        assert backoff["max_dp_vs_smaller_batches"] <= FORMATS[fmt].thresholds.max_batch_dp
    assert "vs_model_card" in tiny["artifacts"]["baseline-bf16"]  # the card's code at bf16 ran beside it
    assert tiny["serve"]["status"] == 200 and tiny["serve"]["results"] == 11
    assert set(tiny["goals"]) >= {"forced OOM backed off", "the 4 GiB choice fits (no OOM, long document scored)"}
    assert tiny["goals"]["forced OOM backed off"] is True
    report = (tmp_path / "gpu-check.md").read_text()
    assert "| baseline-bf16 |" in report and "MET: forced OOM backed off" in report
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob("gpu-check-work-*"))  # temp removed
