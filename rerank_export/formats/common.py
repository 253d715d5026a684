"""What every exporter does last: make the files shareable, hash them, write the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..contract import TEMPLATE_ID
from ..manifest import Manifest, MemoryModel, describe_files


def share_files(folder: Path) -> None:
    """Make every file readable by all (0644, folders 0755): some writers (transformers' save_pretrained,
    onnx) create weights 0600, which a server running as another user, e.g. in a container, cannot read."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def write_manifest(source: Any, folder: Path, name: str, dtype: str, weight_bytes: int,
                   details: dict[str, Any] | None = None, overhead_bytes: int = 0) -> Manifest:
    """Hash the finished folder and write manifest.json; activation memory is left to the measure stage."""
    contract = source.contract
    manifest = Manifest(
        format=name,
        dtype=dtype,
        source_model=source.model_id,
        source_revision=source.revision,
        yes_id=contract.yes_id,
        no_id=contract.no_id,
        max_length=int(min(contract.max_length, source.lm.config.max_position_embeddings)),
        memory=MemoryModel(weight_bytes=int(weight_bytes), overhead_bytes=int(overhead_bytes),
                           activation_bytes_per_token=0),  # 0 = not measured yet (memory.measure_artifact)
        template=TEMPLATE_ID,
        details=details or {},
    )
    share_files(folder)
    manifest.files = describe_files(folder)
    manifest.write(folder)
    return manifest
