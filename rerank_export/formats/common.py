"""Pieces every exporter shares: memory measurement and the manifest skeleton."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..contract import TEMPLATE_ID
from ..manifest import Manifest, MemoryModel, describe_files
from ..memory import MEASURE_BATCH, MEASURE_LENGTH, activation_model

log = logging.getLogger(__name__)



def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_above(fn: Callable[[], Any]) -> int:
    """Peak RSS during fn() above the RSS just before it, in bytes."""
    reset_peak_rss()
    before = rss_bytes()
    fn()
    return max(0, peak_rss_bytes() - before)


def share_files(folder: Path) -> None:
    """Make every file readable by all (0644, folders 0755): some writers (transformers' save_pretrained,
    onnx) create weights 0600, which a server running as another user, e.g. in a container, cannot read."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_manifest(source: Any, folder: Path, name: str, dtype: str, weight_bytes: int,
                   details: dict[str, Any] | None = None, overhead_bytes: int = 0) -> Manifest:
    """Hash the finished folder, measure its activation memory in a fresh process, write manifest.json.

    Called last inside the exporter's atomic_dir, so the artifact is renamed into place only with it.
    """
    contract = source.contract
    manifest = Manifest(
        format=name,
        dtype=dtype,
        source_model=source.model_id,
        source_revision=source.revision,
        yes_id=contract.yes_id,
        no_id=contract.no_id,
        max_length=int(min(contract.max_length, source.lm.config.max_position_embeddings)),
        memory=MemoryModel(
            weight_bytes=int(weight_bytes),
            overhead_bytes=int(overhead_bytes),
            activation_bytes_per_token=0,  # measured below, once the folder is loadable
            measured_on="cpu",
            measured_at_tokens=MEASURE_BATCH * MEASURE_LENGTH,
        ),
        template=TEMPLATE_ID,
        details=details or {},
    )
    share_files(folder)
    manifest.files = describe_files(folder)
    manifest.write(folder)
    memory = manifest.memory
    memory.activation_bytes_per_token, memory.activation_bytes_per_token_per_position = activation_model(folder)
    manifest.write(folder)
    return manifest
