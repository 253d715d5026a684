"""The `vllm serve` command line for an AWQ artifact (GPU hosts). Pure functions: nothing runs vLLM here.

vLLM reads the artifact's config.json `quantization_config` and its GEMM tensors directly. Its AWQ kernels
need fp16 activations, and the artifact is a Qwen3ForSequenceClassification with one label, so the
pooling runner with the classify conversion serves /score and /rerank with sigmoid(logit) = p(yes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

VLLM_DTYPE = "float16"  # the AWQ GEMM kernels take fp16 activations only
RUNNER = ("--runner", "pooling")
CONVERT = ("--convert", "classify")  # *ForSequenceClassification -> classify/score tasks


def vllm_serve_args(folder: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                    max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                    served_model_name: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """argv for `vllm serve` on an AWQ artifact folder (program name first)."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    args = ["vllm", "serve", str(folder), "--quantization", "awq", "--dtype", VLLM_DTYPE, *RUNNER, *CONVERT,
            "--host", host, "--port", str(port)]
    if max_model_len is not None:
        if max_model_len < 1:
            raise ValueError(f"max_model_len must be positive, got {max_model_len}")
        args += ["--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is not None:
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        args += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    if served_model_name:
        args += ["--served-model-name", served_model_name]
    return args + list(extra)


def args_for_artifact(folder: str | Path, manifest_max_length: int, **kwargs: object) -> list[str]:
    """vllm_serve_args after checking the folder holds 4-bit AWQ GEMM; max length from the manifest."""
    from ..formats.awq import read_quant_config

    read_quant_config(Path(folder))
    kwargs.setdefault("max_model_len", manifest_max_length)
    return vllm_serve_args(folder, **kwargs)  # type: ignore[arg-type]
