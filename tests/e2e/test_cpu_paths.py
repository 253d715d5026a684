"""The quantized formats pass the gate's default limits on CPUs with other int8 kernels than this one's.

onnxruntime picks its int8 and 4-bit kernels by CPUID (plain SSE, AVX2, AVX512-VNNI, AMX), which round
differently, and has no switch to force a plain path. qemu-user answers CPUID as the CPU model it is
given, so each artifact's scoring runs under qemu as an older CPU while the reference and the comparison
run natively. Nehalem (SSE4.2) takes onnxruntime's plain fallbacks, the path an AMX Xeon's onnx-int4
scores matched in issue 15; Haswell takes AVX2 without VNNI. `.ci/run` installs qemu-user.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_export.evalsets import builtin_eval_set
from rerank_export.export import export_formats
from rerank_export.formats import get_format
from rerank_export.parity import compare, score_set
from rerank_export.reference import ReferenceBackend

pytestmark = [pytest.mark.slow, pytest.mark.needs_fixtures,
              pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates x86-64 CPUs on an x86-64 host"),
              pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-user not installed")]

SCORER = Path(__file__).with_name("_score_artifact.py")
SEARCH = {"calib_samples": 16, "search_tokens": 512}
# qemu CPU model -> the ISA PyTorch's dispatcher must report inside it (proof that CPUID was emulated).
CPUS = {"Nehalem": "DEFAULT", "Haswell": "AVX2"}
NAMES = ("onnx-int8", "onnx-int4")


@pytest.fixture(scope="module")
def quantized_root(tmp_path_factory, source):
    root = tmp_path_factory.mktemp("cpu-paths")
    export_formats(source.model_id, None, root, ["onnx-int8", "awq-int4", "onnx-int4"],
                   {"awq-int4": SEARCH, "onnx-int4": SEARCH}, source=source)
    return root


@pytest.fixture(scope="module")
def reference(source):
    return score_set(ReferenceBackend(source), source, builtin_eval_set(False))


def _score_under(cpu: str, folder: Path, model: Path) -> dict:
    done = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, str(SCORER), str(folder), str(model)],
                          capture_output=True, text=True, timeout=1200, check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cpu", sorted(CPUS))
@pytest.mark.parametrize("name", NAMES)
def test_passes_the_default_limits_on_an_older_cpu(quantized_root, reference, tiny_model, name, cpu):
    result = _score_under(cpu, quantized_root / name, tiny_model)
    assert result["cpu"]["isa"] == CPUS[cpu], result["cpu"]
    evalset = builtin_eval_set(False)
    report = compare(reference, result["scores"], evalset, get_format(name).thresholds, name)
    print(f"{name} under qemu {cpu} (isa {result['cpu']['isa']}):",
          {k: round(report.metrics[k], 4) for k in ("max_abs_dp", "spearman_mean", "kendall_mean", "top1_mean")})
    assert report.passed, report.breaches
