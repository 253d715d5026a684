"""Every parity report says where its scores were computed: device, engine and version, CPU and its ISA."""

from __future__ import annotations

import json

import pytest

from rerank_export.evalsets import builtin_eval_set
from rerank_export.host import KERNEL_FLAGS, cpu_facts, describe_cpu, engine_facts
from rerank_export.manifest import read_manifest
from rerank_export.parity import check_artifacts


def test_cpu_facts_list_kernel_flags_and_the_isa_torch_dispatches_to():
    import torch

    facts = cpu_facts()
    assert facts["isa"] == torch.backends.cpu.get_cpu_capability()
    assert set(facts["flags"]) <= set(KERNEL_FLAGS) and facts["model"]
    with open("/proc/cpuinfo") as f:
        listed = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    assert facts["flags"] == [flag for flag in KERNEL_FLAGS if flag in listed]
    assert facts["model"] in describe_cpu(facts) and facts["isa"] in describe_cpu(facts)


def test_engine_facts_name_the_installed_version():
    import onnxruntime
    import torch

    assert engine_facts("torch") == {"name": "torch", "version": torch.__version__}
    assert engine_facts("onnxruntime") == {"name": "onnxruntime", "version": onnxruntime.__version__}


@pytest.mark.needs_fixtures
def test_the_gate_records_device_engine_and_cpu(baseline_artifacts, source, copy_tree):
    root = copy_tree(baseline_artifacts)
    (report,) = check_artifacts(root, source, [builtin_eval_set(False).limit(1)], names=["baseline-fp32"])
    folder = root / "baseline-fp32"
    recorded = json.loads((folder / "parity.json").read_text())["ran_on"]
    assert recorded == read_manifest(folder).parity["ran_on"] == json.loads(json.dumps(report.ran_on))
    assert recorded["device"] == "cpu" and recorded["engine"]["name"] == "torch"
    assert recorded["cpu"] == json.loads(json.dumps(cpu_facts()))
    assert describe_cpu(recorded["cpu"]) in (folder / "parity.md").read_text()
