"""The `vllm serve` command for a chosen artifact, with its limits taken from the memory model.

What the checkpoint is comes from its files (config.json architectures and quantization_config) and the
FORMATS table, never from the folder name:
- a Qwen3ForSequenceClassification artifact (the baseline) loads as is;
- the original Qwen3ForCausalLM checkpoint needs hf_overrides that turn its yes/no rows into a head;
- an AWQ artifact adds --quantization awq.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import score_template_path
from .errors import ArtifactError, MissingExtra
from .manifest import Manifest
from .select import Decision

log = logging.getLogger(__name__)

ORIGINAL_RERANKER_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
# Most rerank pairs are a few hundred tokens: --max-num-seqs lets that many share one step, while
# --max-num-batched-tokens (the memory model's token budget) still bounds the step's memory.
TYPICAL_PAIR_TOKENS = 256
MAX_NUM_SEQS = 256
MIN_GPU_UTILIZATION, MAX_GPU_UTILIZATION = 0.05, 0.95
AWQ_DTYPE = "float16"  # vLLM's AWQ GEMM kernels take fp16 activations only


@dataclass(frozen=True)
class VllmSettings:
    max_model_len: int
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int


def settings_from(decision: Decision) -> VllmSettings:
    """vLLM's limits from the selector's numbers: the usable share of the GPU and the token budget."""
    facts = decision.device
    # vLLM's utilisation is a share of the whole GPU; give it what the selector counted as usable.
    share = facts.usable_bytes / max(1, facts.total_bytes)
    util = round(min(MAX_GPU_UTILIZATION, max(MIN_GPU_UTILIZATION, share)), 2)
    seqs = max(1, min(MAX_NUM_SEQS, decision.token_budget // TYPICAL_PAIR_TOKENS))
    return VllmSettings(decision.max_length, util, seqs, max(decision.token_budget, decision.max_length))


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ArtifactError(f"{path} not found: vLLM serves Hugging Face folders (config.json + safetensors); "
                            "pick a torch artifact, not an ONNX one")
    return json.loads(path.read_text())


def checkpoint_flags(config: dict[str, Any], manifest: Manifest | None) -> list[str]:
    """--hf-overrides for the original causal LM, --quantization for quantized artifacts."""
    flags: list[str] = []
    architectures = config.get("architectures") or []
    if "Qwen3ForCausalLM" in architectures:
        flags += ["--hf-overrides", json.dumps(ORIGINAL_RERANKER_OVERRIDES, separators=(",", ":"))]
    elif "Qwen3ForSequenceClassification" not in architectures:
        raise ArtifactError(f"config.json names {architectures}; vLLM can serve a Qwen3ForSequenceClassification "
                            "artifact or the original Qwen3ForCausalLM reranker")
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method is None and manifest is not None:
        from .formats import FORMATS

        spec = FORMATS.get(manifest.format)
        method = "awq" if spec is not None and spec.family == "awq" else None
    if method:
        flags += ["--quantization", str(method)]
    if method == "awq":
        flags += ["--dtype", AWQ_DTYPE]
    return flags


def build_command(folder: str | Path, settings: VllmSettings, config: dict[str, Any],
                  manifest: Manifest | None = None, host: str = "127.0.0.1", port: int = 8000,
                  served_name: str | None = None, api_key: str | None = None) -> list[str]:
    """argv for `vllm serve` (pooling runner, prefix caching on)."""
    cmd = ["vllm", "serve", str(folder), "--runner", "pooling",
           "--host", host, "--port", str(port),
           "--max-model-len", str(settings.max_model_len),
           "--gpu-memory-utilization", f"{settings.gpu_memory_utilization:.2f}",
           "--max-num-seqs", str(settings.max_num_seqs),
           "--max-num-batched-tokens", str(settings.max_num_batched_tokens),
           "--enable-prefix-caching", "--chat-template", str(score_template_path())]
    cmd += checkpoint_flags(config, manifest)
    if served_name:
        cmd += ["--served-model-name", served_name]
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd


def render(cmd: list[str]) -> str:
    return shlex.join(cmd)


def exec_vllm(cmd: list[str]) -> None:
    """Replace this process with vLLM; without vLLM installed, say which extra to install."""
    exe = shutil.which(cmd[0])
    if exe is None or importlib.util.find_spec("vllm") is None:
        raise MissingExtra("vllm", "vllm")
    log.info("exec %s", render(cmd))
    os.execv(exe, cmd)


def is_original_checkpoint(folder: str | Path) -> bool:
    """A plain Qwen3ForCausalLM folder (no manifest): the original reranker vLLM can serve with overrides."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file() or not (folder / "config.json").is_file():
        return False
    return "Qwen3ForCausalLM" in (read_config(folder).get("architectures") or [])


def original_checkpoint_manifest(folder: str | Path) -> Manifest:
    """A manifest for the original checkpoint so the selector can size vLLM for it.

    Weights are the safetensors bytes on disk. Activations per token are estimated from the shapes
    (16-bit hidden states x4 plus the MLP's three intermediate tensors), not measured; the original is
    the reference itself, so its parity is a pass by definition.
    """
    from .manifest import MemoryModel

    folder = Path(folder)
    cfg = read_config(folder)
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    per_token = 2 * (4 * int(cfg.get("hidden_size", 0)) + 3 * int(cfg.get("intermediate_size", 0)))
    return Manifest(format="original", dtype=str(cfg.get("torch_dtype", "bf16")), source_model=str(folder),
                    source_revision=None, yes_id=-1, no_id=-1,
                    max_length=int(cfg.get("max_position_embeddings", 8192)),
                    memory=MemoryModel(weights, 0, max(1, per_token), measured_on="estimate"),
                    parity={"verdict": "pass", "note": "the original checkpoint is the reference"})
