"""The vLLM server command: flags from the checkpoint's files and from the memory model (no GPU, no vLLM),
then every emitted flag parsed by vLLM's own argument parser where a vLLM interpreter is at hand."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from rerank_export.cli import main
from rerank_export.errors import ArtifactError
from rerank_export.host import CUDA_CONTEXT_BYTES
from rerank_export.manifest import Manifest, MemoryModel
from rerank_export.select import USABLE_FRACTION, DeviceFacts, FormatTraits, choose_artifact
from rerank_export.vllm.command import (
    API_KEY_ENV,
    CPU_STEP_TOKENS,
    KV_CACHE_ENV,
    MAX_NUM_SEQS,
    ORIGINAL_RERANKER_OVERRIDES,
    TYPICAL_PAIR_TOKENS,
    VLLM_MODULE,
    VLLM_PYTHON_ENV,
    VllmSettings,
    build_command,
    checkpoint_flags,
    kv_bytes_per_token,
    settings_from,
)
from rerank_export.vllm.server import exit_status, failure_reason

GiB = 2**30
SEQ_CLS = {"architectures": ["Qwen3ForSequenceClassification"], "torch_dtype": "float32"}
# The 0.6B's attention shape: 28 layers, 8 KV heads of 128 in bf16 -> 114,688 KV bytes per token.
QWEN3_06B = {**SEQ_CLS, "torch_dtype": "bfloat16", "num_hidden_layers": 28, "num_key_value_heads": 8,
             "num_attention_heads": 16, "head_dim": 128, "hidden_size": 1024}
SETTINGS = VllmSettings("cuda", 8192, 32, 8192, gpu_memory_utilization=0.9)
VLLM_PY = os.environ.get(VLLM_PYTHON_ENV)


def decision(free: int, total: int, max_length: int = 8192, per_token: int = 50_000, kind: str = "cuda"):
    m = Manifest("baseline-bf16", "bf16", "Qwen/Qwen3-Reranker-0.6B", None, 1, 2, 40960,
                 MemoryModel(GiB, 0, per_token), parity={"verdict": "pass"})
    traits = {"baseline-bf16": FormatTraits(80, 30, ("cpu", "cuda"), "bf16", "torch")}
    return choose_artifact([("/a/baseline-bf16", m)], DeviceFacts(kind, free, total, "test"), max_length, traits)


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_settings_come_from_the_memory_model():
    d = decision(free=12 * GiB, total=24 * GiB, max_length=4096, per_token=1_000_000)
    s = settings_from(d)
    assert s.device == "cuda" and s.cpu_kv_cache_gib is None and s.max_model_len == 4096
    assert s.gpu_memory_utilization == round(12 * USABLE_FRACTION / 24, 2)
    room_tokens = (int(12 * GiB * USABLE_FRACTION) - GiB) // 1_000_000
    assert s.max_num_batched_tokens == d.token_budget == room_tokens
    assert s.max_num_seqs == min(MAX_NUM_SEQS, room_tokens // TYPICAL_PAIR_TOKENS)


def test_cpu_settings_size_the_kv_cache_beside_the_activations():
    d = decision(free=16 * GiB, total=24 * GiB, max_length=8192, per_token=50_000, kind="cpu")
    s = settings_from(d, QWEN3_06B)
    kv = kv_bytes_per_token(QWEN3_06B)
    assert kv == 2 * 28 * 8 * 128 * 2
    assert s.gpu_memory_utilization is None and s.device == "cpu"
    assert 8192 <= s.max_num_batched_tokens <= d.token_budget
    # weights + the step's activations + its KV cache stay within what the selector counted as usable
    assert GiB + s.max_num_batched_tokens * 50_000 + s.cpu_kv_cache_gib * GiB <= d.device.usable_bytes + GiB
    assert s.cpu_kv_cache_gib * GiB >= s.max_num_batched_tokens * kv
    # a CPU step holds one full-length sequence or CPU_STEP_TOKENS, not the whole memory budget
    assert s.max_num_batched_tokens == 8192
    short = settings_from(decision(free=16 * GiB, total=24 * GiB, max_length=512, kind="cpu"), QWEN3_06B)
    assert short.max_num_batched_tokens == CPU_STEP_TOKENS and short.max_model_len == 512


def test_baseline_loads_without_overrides_in_its_own_dtype():
    cmd = build_command("/a/baseline-fp32", SETTINGS, SEQ_CLS, python="/py").argv
    assert cmd[:5] == ["/py", "-m", VLLM_MODULE, "--model", "/a/baseline-fp32"]
    assert "--hf-overrides" not in cmd and "--quantization" not in cmd
    assert "--enable-prefix-caching" in cmd and flag(cmd, "--runner") == "pooling"
    assert flag(cmd, "--max-model-len") == "8192" and flag(cmd, "--host") == "127.0.0.1"
    assert flag(cmd, "--dtype") == "float32"  # vLLM's auto would run fp32 weights in 16 bits


def test_artifact_names_its_own_chat_template(verified_artifacts):
    folder = verified_artifacts / "baseline-fp32"
    cmd = build_command(folder, SETTINGS, SEQ_CLS).argv
    assert flag(cmd, "--chat-template") == str(folder / "chat_template.jinja")


def test_original_checkpoint_needs_the_overrides():
    flags = checkpoint_flags({"architectures": ["Qwen3ForCausalLM"], "torch_dtype": "bfloat16"}, None)
    assert flags[0] == "--hf-overrides" and json.loads(flags[1]) == ORIGINAL_RERANKER_OVERRIDES
    assert flags[-2:] == ["--dtype", "bfloat16"]


def test_awq_runs_bf16_where_native_else_fp16():
    awq = {**SEQ_CLS, "torch_dtype": "float16", "quantization_config": {"quant_method": "awq", "bits": 4}}
    assert checkpoint_flags(awq, None, bf16=True) == ["--quantization", "awq", "--dtype", "bfloat16"]
    assert checkpoint_flags(awq, None, bf16=False) == ["--quantization", "awq", "--dtype", "float16"]


def test_non_qwen3_checkpoint_is_refused():
    with pytest.raises(ArtifactError, match="BertModel"):
        checkpoint_flags({"architectures": ["BertModel"]}, None)


def test_the_api_key_goes_to_the_environment_only():
    command = build_command("/a/b", SETTINGS, SEQ_CLS, api_key="s3cr3t")
    assert not any("s3cr3t" in a for a in command.argv) and "--api-key" not in command.argv
    assert "s3cr3t" not in command.render() and "s3cr3t" not in repr(command)
    assert command.child_env({"PATH": "/bin"})[API_KEY_ENV] == "s3cr3t"
    # no key asked for: a key inherited from our environment does not lock clients out
    assert API_KEY_ENV not in build_command("/a/b", SETTINGS, SEQ_CLS).child_env({API_KEY_ENV: "old"})


def print_command(args: list[str], capsys, passthrough: tuple[str, ...] = ()) -> list[str]:
    assert main(["serve", *args, "--engine", "vllm", "--print-command", *passthrough]) == 0
    return shlex.split(capsys.readouterr().out.strip().splitlines()[-1])


def test_print_command_for_a_real_artifact_on_a_cpu(baseline_artifacts, capsys):
    cmd = print_command([str(baseline_artifacts), "--device", "cpu", "--memory", "16GiB", "--max-length", "2048",
                         "--allow-unverified", "--port", "9001", "--vllm-python", "/py"], capsys)
    env = [c for c in cmd if c.startswith("VLLM_CPU_")]  # KV cache, thread binding (vllm/binding.py)
    assert env[0].startswith(KV_CACHE_ENV + "=") and int(env[0].split("=")[1]) >= 1
    argv = cmd[len(env):]
    assert argv[:3] == ["/py", "-m", VLLM_MODULE]
    assert flag(argv, "--model").startswith(str(baseline_artifacts))  # which one depends on the CPU's bf16
    assert flag(argv, "--max-model-len") == "2048" and flag(argv, "--port") == "9001"
    assert "--gpu-memory-utilization" not in argv and "--hf-overrides" not in argv


def test_print_command_for_a_gpu_plan(baseline_artifacts, capsys, monkeypatch):
    monkeypatch.setattr("rerank_export.host.cuda_available", lambda: False)
    cmd = print_command([str(baseline_artifacts), "--device", "cuda", "--memory", "16GiB", "--max-length", "2048",
                         "--allow-unverified"], capsys)
    assert flag(cmd, "--model").endswith("baseline-bf16")  # the fastest on a GPU with room for its batches
    # The usable share of a 16 GiB card once the CUDA context is taken off (host.CUDA_CONTEXT_BYTES).
    usable = USABLE_FRACTION * (16 * 2**30 - CUDA_CONTEXT_BYTES) / (16 * 2**30)
    assert flag(cmd, "--gpu-memory-utilization") == f"{usable:.2f}"
    assert not any(c.startswith(KV_CACHE_ENV) for c in cmd)


def test_further_vllm_arguments_pass_through(baseline_artifacts, capsys):
    cmd = print_command([str(baseline_artifacts), "--memory", "16GiB", "--allow-unverified"], capsys,
                        ("--", "--tensor-parallel-size", "2"))
    assert cmd[-2:] == ["--tensor-parallel-size", "2"]
    assert main(["pick", str(baseline_artifacts), "--", "--tensor-parallel-size", "2"]) == 2


def test_an_api_key_among_vllm_arguments_is_refused(baseline_artifacts, capsys):
    assert main(["serve", str(baseline_artifacts), "--engine", "vllm", "--memory", "16GiB", "--allow-unverified",
                 "--", "--api-key", "s3cr3t"]) == 2
    err = capsys.readouterr().err
    assert "environment" in err and len(err.strip().splitlines()) == 1


def test_print_command_refuses_unverified_artifacts(baseline_artifacts, capsys):
    assert main(["serve", str(baseline_artifacts), "--engine", "vllm", "--print-command", "--memory", "16GiB"]) == 1
    assert "never checked" in capsys.readouterr().err


def test_print_command_for_the_original_checkpoint(tiny_model, capsys):
    cmd = print_command([str(tiny_model), "--memory", "16GiB"], capsys)
    assert json.loads(flag(cmd, "--hf-overrides")) == ORIGINAL_RERANKER_OVERRIDES
    assert flag(cmd, "--chat-template").endswith("qwen3_reranker_score.jinja")  # the package's copy


def test_without_vllm_it_says_how_to_install_it(verified_artifacts, capsys):
    code = main(["serve", str(verified_artifacts), "--engine", "vllm", "--memory", "16GiB",
                 "--vllm-python", sys.executable])  # this test's interpreter has no vLLM
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "scripts/vllm-venv.sh" in err and "pip install 'rerank-export[vllm]'" in err


def test_vllm_options_only_with_the_vllm_engine(baseline_artifacts, capsys):
    assert main(["serve", str(baseline_artifacts), "--print-command"]) == 2
    assert "--engine vllm" in capsys.readouterr().err


def test_failure_reason_is_vllms_root_cause():
    log = ("(APIServer pid=1) WARNING 12-02 01:29:12 [x.py:1] ... like `OSError: [Errno 24] Too many open files`\n"
           "(Worker pid=3) ERROR 12-02 01:29:52 [m.py:953] ValueError: There is no module or parameter named "
           "'clip' in Qwen3ForSequenceClassification. " + "x" * 500 + "\n"
           "(EngineCore pid=2) ERROR 12-02 01:29:55 [core.py:1510] Exception: WorkerProc initialization failed\n"
           "RuntimeError: Engine core initialization failed. See root cause above.\n")
    reason = failure_reason(log)
    assert reason.startswith("ValueError: There is no module or parameter named 'clip'") and len(reason) < 320
    assert failure_reason("just words\n") == "just words"
    assert exit_status(-15) == 143 and exit_status(3) == 3


PARSE = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # vLLM before the launchers package
    from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])
validate_parsed_serve_args(args)
print(json.dumps({k: v for k, v in vars(args).items()}, default=str))
"""


@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PY, reason=f"${VLLM_PYTHON_ENV} names no vLLM interpreter")
@pytest.mark.parametrize("kind", ["baseline-cuda", "awq-cpu", "original-cpu"])
def test_vllms_own_parser_accepts_every_flag(kind, verified_artifacts):
    folder = verified_artifacts / "baseline-fp32"
    config = {**SEQ_CLS, "quantization_config": {"quant_method": "awq"}} if kind.startswith("awq") else SEQ_CLS
    if kind.startswith("original"):
        config = {"architectures": ["Qwen3ForCausalLM"], "torch_dtype": "bfloat16"}
    settings = SETTINGS if kind.endswith("cuda") else VllmSettings("cpu", 4096, 16, 8192, cpu_kv_cache_gib=2)
    argv = build_command(folder, settings, config, served_name="m", api_key="k").argv
    out = subprocess.run([VLLM_PY, "-c", PARSE, *argv[3:]], check=False, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["model"] == str(folder) and parsed["runner"] == "pooling"
    assert parsed["max_model_len"] == settings.max_model_len and parsed["enable_prefix_caching"] is True
    assert parsed["max_num_seqs"] == settings.max_num_seqs
    assert parsed["max_num_batched_tokens"] == settings.max_num_batched_tokens
    assert parsed["chat_template"] == flag(argv, "--chat-template") and parsed["served_model_name"] == ["m"]
    assert parsed["dtype"] == flag(argv, "--dtype") and parsed["api_key"] is None
    if kind.startswith("awq"):
        assert parsed["quantization"] == "awq"
    if kind.startswith("original"):
        assert "is_original_qwen3_reranker" in str(parsed["hf_overrides"])
    if settings.gpu_memory_utilization is not None:
        assert parsed["gpu_memory_utilization"] == settings.gpu_memory_utilization
