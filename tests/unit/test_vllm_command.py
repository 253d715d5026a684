"""The `vllm serve` command: flags from the checkpoint's files and from the memory model (no GPU, no vLLM)."""

from __future__ import annotations

import importlib.util
import json
import shlex

import pytest

from rerank_export.cli import main
from rerank_export.errors import ArtifactError
from rerank_export.manifest import Manifest, MemoryModel
from rerank_export.select import USABLE_FRACTION, DeviceFacts, FormatTraits, choose_artifact
from rerank_export.vllm_command import (
    MAX_NUM_SEQS,
    ORIGINAL_RERANKER_OVERRIDES,
    TYPICAL_PAIR_TOKENS,
    build_command,
    checkpoint_flags,
    settings_from,
)

GiB = 2**30
SEQ_CLS = {"architectures": ["Qwen3ForSequenceClassification"]}


def decision(free: int, total: int, max_length: int = 8192, per_token: int = 50_000):
    m = Manifest("baseline-bf16", "bf16", "Qwen/Qwen3-Reranker-0.6B", None, 1, 2, 40960,
                 MemoryModel(GiB, 0, per_token), parity={"verdict": "pass"})
    traits = {"baseline-bf16": FormatTraits(80, 30, ("cpu", "cuda"), "bf16", "torch")}
    return choose_artifact([("/a/baseline-bf16", m)], DeviceFacts("cuda", free, total, "test"), max_length, traits)


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_settings_come_from_the_memory_model():
    d = decision(free=12 * GiB, total=24 * GiB, max_length=4096, per_token=1_000_000)
    s = settings_from(d)
    assert s.max_model_len == 4096
    assert s.gpu_memory_utilization == round(12 * USABLE_FRACTION / 24, 2)
    room_tokens = (int(12 * GiB * USABLE_FRACTION) - GiB) // 1_000_000
    assert s.max_num_batched_tokens == d.token_budget == room_tokens
    assert s.max_num_seqs == min(MAX_NUM_SEQS, room_tokens // TYPICAL_PAIR_TOKENS)


def test_baseline_loads_without_overrides():
    cmd = build_command("/a/baseline-bf16", settings_from(decision(8 * GiB, 8 * GiB)), SEQ_CLS)
    assert cmd[:3] == ["vllm", "serve", "/a/baseline-bf16"]
    assert "--hf-overrides" not in cmd and "--quantization" not in cmd
    assert "--enable-prefix-caching" in cmd and flag(cmd, "--runner") == "pooling"
    assert flag(cmd, "--max-model-len") == "8192" and flag(cmd, "--host") == "127.0.0.1"


def test_original_checkpoint_needs_the_overrides():
    flags = checkpoint_flags({"architectures": ["Qwen3ForCausalLM"]}, None)
    assert flags[0] == "--hf-overrides" and json.loads(flags[1]) == ORIGINAL_RERANKER_OVERRIDES


def test_awq_adds_quantization():
    awq = {**SEQ_CLS, "quantization_config": {"quant_method": "awq", "bits": 4}}
    assert checkpoint_flags(awq, None) == ["--quantization", "awq", "--dtype", "float16"]


def test_non_qwen3_checkpoint_is_refused():
    with pytest.raises(ArtifactError, match="BertModel"):
        checkpoint_flags({"architectures": ["BertModel"]}, None)


def test_print_command_for_a_real_artifact(baseline_artifacts, capsys):
    args = ["serve", str(baseline_artifacts), "--engine", "vllm", "--print-command", "--memory", "16GiB",
            "--max-length", "2048", "--allow-unverified", "--port", "9001"]
    assert main(args) == 0
    cmd = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    assert cmd[:2] == ["vllm", "serve"] and cmd[2].endswith("baseline-fp32")  # highest fidelity on a GPU
    assert flag(cmd, "--max-model-len") == "2048" and flag(cmd, "--port") == "9001"
    assert flag(cmd, "--gpu-memory-utilization") == f"{USABLE_FRACTION:.2f}"
    assert "--hf-overrides" not in cmd


def test_print_command_refuses_unverified_artifacts(baseline_artifacts, capsys):
    assert main(["serve", str(baseline_artifacts), "--engine", "vllm", "--print-command", "--memory", "16GiB"]) == 1
    assert "never checked" in capsys.readouterr().err


def test_print_command_for_the_original_checkpoint(tiny_model, capsys):
    assert main(["serve", str(tiny_model), "--engine", "vllm", "--print-command", "--memory", "16GiB"]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(flag(cmd, "--hf-overrides")) == ORIGINAL_RERANKER_OVERRIDES


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_without_vllm_it_names_the_extra(baseline_artifacts, capsys):
    assert main(["serve", str(baseline_artifacts), "--engine", "vllm", "--memory", "16GiB",
                 "--allow-unverified"]) == 1
    assert "pip install 'rerank-export[vllm]'" in capsys.readouterr().err


def test_print_command_only_with_vllm(baseline_artifacts, capsys):
    assert main(["serve", str(baseline_artifacts), "--print-command"]) == 2
    assert "--engine vllm" in capsys.readouterr().err
