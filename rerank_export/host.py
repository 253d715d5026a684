"""Which machine a number came from: the CPU, the instruction sets that change kernels, the engine.

Quantized kernels round differently by instruction set: onnxruntime's int8 and 4-bit matmuls take
separate AVX2, AVX512-VNNI and AMX paths, so the same artifact scores a little differently on each CPU.
Every parity report and benchmark result records these facts beside its numbers.

Also the selector's device facts (free memory, CUDA, native bf16): what this machine offers an artifact.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

from .errors import UsageError
from .select import DeviceFacts, cpu_supports_bf16, parse_memory

# The flags that select different int8/bf16/fp32 kernels in onnxruntime (MLAS), PyTorch and oneDNN.
KERNEL_FLAGS = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "i8mm")


@cache
def cpu_facts() -> dict[str, Any]:
    """{"model", "flags", "isa", "cores"}: flags as the OS lists them, isa as PyTorch's dispatcher sees it.

    The two differ under an emulator (the OS lists the host's flags, CPUID says the emulated CPU's), so
    both are kept: `isa` is what the kernels actually ran with.
    """
    model, flags = _proc_cpuinfo()
    return {"model": model or platform.processor() or platform.machine(),
            "flags": [f for f in KERNEL_FLAGS if f in flags], "isa": _torch_isa(),
            "cores": os.cpu_count()}


def _proc_cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _torch_isa() -> str | None:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):
        return None


def engine_facts(backend: str) -> dict[str, Any]:
    """{"name", "version"} of the library that ran a format's backend ("torch" or "onnxruntime")."""
    from importlib.metadata import PackageNotFoundError, version

    names = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "torch": ("torch",)}.get(backend, (backend,))
    for name in names:
        try:
            return {"name": backend, "version": version(name)}
        except PackageNotFoundError:
            continue
    return {"name": backend, "version": None}


def describe_cpu(facts: dict[str, Any] | None = None) -> str:
    """One line for reports: 'AMD EPYC (isa AVX512; avx2 avx512f avx512_vnni avx512_bf16)'."""
    facts = facts or cpu_facts()
    return f"{facts['model']} (isa {facts['isa'] or '?'}; {' '.join(facts['flags']) or 'no SIMD flags listed'})"


# --- the selector's device facts -----------------------------------------------------------------

DEVICES = ("auto", "cpu", "cuda")
# A CUDA context (driver, cuBLAS/cuDNN workspaces, PyTorch's kernels) takes memory outside PyTorch's
# allocator: a few hundred MiB on recent cards with lazy module loading. The driver's free memory excludes
# it once a context exists; a --memory budget for a card names its whole size, so it is taken off there.
CUDA_CONTEXT_BYTES = 512 * 2**20


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # the selector works without torch when --memory is given
        return False
    return bool(torch.cuda.is_available())


def gpu_memory() -> tuple[int, int]:
    """(free, total) bytes of the current CUDA device, from the driver."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return int(free), int(total)


def gpu_name() -> str | None:
    """The current CUDA device's name, for reports (None without one)."""
    if not cuda_available():
        return None
    import torch

    return str(torch.cuda.get_device_name())


def cpu_memory() -> tuple[int, int]:
    """(available, total) bytes of RAM."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def read_cpu_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_supports_bf16(f.read())
    except OSError:  # not Linux: assume no native bf16, which only costs speed, never correctness
        return False


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise UsageError(f"device '{device}' is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def device_facts(device: str = "auto", memory: int | str | None = None) -> DeviceFacts:
    """Facts for the selector; an explicit `memory` budget replaces what the driver/OS reports."""
    kind = resolve_device(device)
    bf16 = read_cpu_bf16() if kind == "cpu" else False
    if memory is not None:
        budget = memory if isinstance(memory, int) else parse_memory(memory)
        if kind == "cuda":
            return DeviceFacts(kind, max(0, budget - CUDA_CONTEXT_BYTES), budget,
                               "--memory, less the CUDA context", bf16)
        return DeviceFacts(kind, budget, budget, "--memory", bf16)
    if kind == "cuda":
        if not cuda_available():
            raise UsageError("device 'cuda' asked for but no CUDA GPU is visible; use --device cpu, or plan "
                             "for a GPU elsewhere with --memory")
        free, total = gpu_memory()
        return DeviceFacts("cuda", free, total, "cuda driver", False)
    free, total = cpu_memory()
    return DeviceFacts("cpu", free, total, "available RAM", bf16)


def cap_cuda_memory(facts: DeviceFacts) -> float | None:
    """Hold this process's CUDA allocator to a --memory budget smaller than the card, so that the budget
    the selector planned with is the one the runtime lives in (a 4 GiB plan on a 24 GiB card OOMs, and
    backs off, where a 4 GiB card would). Returns the fraction set, None where nothing was capped."""
    if facts.kind != "cuda" or not facts.source.startswith("--memory") or not cuda_available():
        return None
    import torch

    _, total = gpu_memory()
    fraction = min(1.0, facts.free_bytes / total)
    if fraction < 1.0:
        torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction
