"""What `serve --engine vllm` decides before starting vLLM: which folder (an artifact vLLM loads, or the
original checkpoint) and whether the device runs bf16 natively (AWQ's activation dtype)."""

from __future__ import annotations

from pathlib import Path

from .. import host
from ..manifest import Manifest
from ..plan import plan
from ..select import Decision, choose_artifact
from .command import is_original_checkpoint, original_checkpoint


def decide(artifacts: str | Path, device: str, memory: int | str | None, max_length: int,
           allow_unverified: bool) -> tuple[Decision, dict[str, Manifest]]:
    """The selector's choice among the torch artifacts vLLM loads, or the original checkpoint as it is."""
    kind = host.resolve_device(device)  # cuda when a GPU is visible, else vLLM's CPU build
    if is_original_checkpoint(artifacts):
        manifest, traits = original_checkpoint(artifacts)
        decision = choose_artifact([(str(artifacts), manifest)], host.device_facts(kind, memory), max_length, traits,
                                   allow_unverified)
        return decision, {str(artifacts): manifest}
    return plan(artifacts, kind, memory, max_length, allow_unverified, backends=("torch",))


def native_bf16(decision: Decision) -> bool:
    """Whether the device runs bf16 natively; unknown GPUs (planned elsewhere) get fp16, which all run."""
    if decision.device.kind == "cpu":
        return decision.device.cpu_bf16
    if not host.cuda_available():  # planning for a GPU elsewhere (--memory)
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())
