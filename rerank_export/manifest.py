"""manifest.json: what an artifact is, where it came from, what it weighs and whether it passed parity.

Also the one way artifacts are written: into a temporary folder beside the target, renamed into place
only when complete, so an interrupted export never leaves a folder that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError, UsageError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
TOOLKIT_VERSION = "0.1.0"


@dataclass
class MemoryModel:
    """Peak memory ~= weights + overhead + batch tokens x (per-token bytes + per-position growth x length).

    The growth term is attention that keeps a length x length score matrix per sequence (onnxruntime's
    CPU graphs do): their per-token cost rises with the sequence length. 0 in manifests written before it.
    """

    weight_bytes: int
    overhead_bytes: int
    activation_bytes_per_token: int
    measured_on: str = "cpu"
    measured_at_tokens: int = 0
    activation_bytes_per_token_per_position: float = 0.0

    def __post_init__(self) -> None:
        # A hand-edited or corrupted manifest fails here, where read_manifest names the file, not in pick.
        for name in ("weight_bytes", "overhead_bytes", "activation_bytes_per_token", "measured_at_tokens",
                     "activation_bytes_per_token_per_position"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise TypeError(f"memory.{name} must be a non-negative number, not {value!r}")

    def bytes_per_token(self, length: int) -> float:
        """Activation bytes per padded token in batches of sequences up to `length` tokens."""
        return self.activation_bytes_per_token + self.activation_bytes_per_token_per_position * length

    def peak_bytes(self, length: int) -> int:
        """Peak while scoring one sequence of `length` tokens."""
        return int(self.weight_bytes + self.overhead_bytes + self.bytes_per_token(length) * length)


@dataclass
class Manifest:
    format: str
    dtype: str
    source_model: str
    source_revision: str | None
    yes_id: int
    no_id: int
    max_length: int
    memory: MemoryModel
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    template: str = ""
    # The single-logit head is W[yes] - W[no]: sigmoid(logit) = p(yes). Recorded because tools differ.
    head_row_order: str = "yes-minus-no"
    toolkit_version: str = TOOLKIT_VERSION
    schema_version: int = SCHEMA_VERSION
    created: float = field(default_factory=time.time)
    recipe: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.parity) and self.parity.get("verdict") == "pass"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["memory"] = MemoryModel(**data["memory"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} not found: '{folder}' is not a rerank-export artifact folder")
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a valid manifest: {exc}") from exc


def find_artifacts(root: str | Path) -> list[Path]:
    """Artifact folders directly under `root` (or `root` itself when it is one), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"artifacts folder '{root}' does not exist")
    if (root / MANIFEST).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """bytes and sha256 of every file in the artifact except the manifest and parity outputs."""
    skip = {MANIFEST, "parity.json", "parity.md", "parity.png"}
    return {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def verify_files(folder: str | Path, manifest: Manifest) -> None:
    """Refuse an artifact whose files are missing or differ from the manifest (a flipped byte)."""
    folder = Path(folder)
    for name, info in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the artifact is incomplete; rebuild it")
        if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
            raise ArtifactError(f"{path} does not match its sha256 in the manifest: corrupted; rebuild it")


@contextlib.contextmanager
def atomic_dir(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success replace `target` with it, else delete it."""
    target = Path(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
    except OSError as exc:
        raise UsageError(f"cannot write to '{parent}': {exc.strerror or exc}") from exc
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
        if target.exists():
            if not overwrite:
                raise ArtifactError(f"'{target}' already exists")
            old = parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
