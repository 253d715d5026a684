"""load() -> Reranker: pick the verified artifact that fits this device, check its files, load its backend.

The choice is select.choose_artifact (pure); this module gathers the device facts, loads through the
FORMATS table's loader, and scores through scoring.score_encoded with a token budget derived from the
memory model, so one batch never needs more memory than the selector planned for.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import DEFAULT_MAX_LENGTH, Contract, load_tokenizer
from .errors import ArtifactError, NoArtifactFits, UsageError
from .manifest import Manifest, load_artifacts, verify_files
from .select import (
    Decision,
    DeviceFacts,
    choose_artifact,
    cpu_supports_bf16,
    parse_memory,
    traits_from_formats,
)

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


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
        return DeviceFacts(kind, budget, budget, "--memory", bf16)
    if kind == "cuda":
        if not cuda_available():
            raise UsageError("device 'cuda' asked for but no CUDA GPU is visible; use --device cpu, or plan "
                             "for a GPU elsewhere with --memory")
        free, total = gpu_memory()
        return DeviceFacts("cuda", free, total, "cuda driver", False)
    free, total = cpu_memory()
    return DeviceFacts("cpu", free, total, "available RAM", bf16)


def plan(artifacts_dir: str | Path, device: str = "auto", memory_budget: int | str | None = None,
         max_length: int = DEFAULT_MAX_LENGTH, allow_unverified: bool = False,
         backends: Sequence[str] | None = None, verify: bool = False) -> tuple[Decision, dict[str, Manifest]]:
    """The selector's decision over every artifact under `artifacts_dir` (nothing loaded).

    A folder with a broken manifest is skipped with a warning naming it. With `verify`, the chosen
    artifact's files are checked against their sha256; a corrupted one is passed over for the next.
    """
    if max_length < 1:
        raise UsageError(f"max length must be positive, got {max_length}")
    manifests = {str(f): m for f, m in load_artifacts(artifacts_dir)}
    facts = device_facts(device, memory_budget)
    broken: dict[str, str] = {}
    while True:
        decision = choose_artifact(list(manifests.items()), facts, max_length, traits_from_formats(),
                                   allow_unverified, backends, broken)
        if not verify or decision.chosen is None:
            return decision, manifests
        try:
            verify_files(decision.chosen.folder, manifests[decision.chosen.folder])
            return decision, manifests
        except ArtifactError as exc:
            log.warning("passing over %s: %s", decision.chosen.folder, exc)
            broken[decision.chosen.folder] = f"files do not match the manifest ({exc})"


@dataclass
class RerankResult:
    index: int
    relevance_score: float
    document: str | None = None


@dataclass
class Ranking:
    """rerank()'s answer: results best first, and token usage (truncated documents by index)."""

    results: list[RerankResult]
    total_tokens: int
    truncated: list[int] = field(default_factory=list)


def load(artifacts_dir: str | Path, device: str = "auto", memory_budget: int | str | None = None,
         max_length: int = DEFAULT_MAX_LENGTH, allow_unverified: bool = False, prefix_reuse: bool = True,
         progress: bool = False) -> Reranker:
    """Choose, verify and load the artifact that fits; see select.py for how it is chosen.

    `memory_budget` (bytes or '4GiB') replaces the free memory the device reports. Refuses artifacts
    whose parity failed or was never checked unless `allow_unverified`, and any artifact whose files
    differ from their sha256 in the manifest.
    """
    decision, manifests = plan(artifacts_dir, device, memory_budget, max_length, allow_unverified, verify=True)
    if decision.chosen is None:
        from .select import why_nothing

        raise NoArtifactFits(why_nothing(decision))
    if decision.note:
        log.warning("%s", decision.note)
    folder = Path(decision.chosen.folder)
    manifest = manifests[str(folder)]
    return Reranker.from_folder(folder, manifest, decision, prefix_reuse, progress)


def _load_contract(folder: Path, manifest: Manifest, max_length: int) -> Contract:
    contract = Contract(load_tokenizer(folder), max_length)
    if (contract.yes_id, contract.no_id) != (manifest.yes_id, manifest.no_id):
        raise ArtifactError(f"{folder}: tokenizer's yes/no ids {(contract.yes_id, contract.no_id)} differ from "
                            f"the manifest's {(manifest.yes_id, manifest.no_id)}; re-export the artifact")
    return contract


class Reranker:
    """A loaded artifact: rerank(query, documents) and score(pairs). Thread-safe (one batch at a time)."""

    def __init__(self, backend: Any, contract: Contract, manifest: Manifest, folder: Path,
                 decision: Decision | None = None, token_budget: int | None = None, progress: bool = False):
        self.backend = backend
        self.contract = contract
        self.manifest = manifest
        self.folder = Path(folder)
        self.decision = decision
        self.token_budget = token_budget or (decision.token_budget if decision else contract.max_length)
        self.progress = progress
        self._lock = threading.Lock()  # one forward pass at a time: they would only fight over cores/memory

    @classmethod
    def from_folder(cls, folder: Path, manifest: Manifest, decision: Decision, prefix_reuse: bool = True,
                    progress: bool = False) -> Reranker:
        from .formats import get_format
        from .prefix import PrefixReuseBackend, supports_prefix_reuse

        spec = get_format(manifest.format)
        contract = _load_contract(folder, manifest, decision.max_length)
        log.info("loading %s on %s (token budget %d)", folder, decision.device.kind, decision.token_budget)
        backend = spec.loader(folder, manifest, decision.device.kind)
        if prefix_reuse and supports_prefix_reuse(backend):
            backend = PrefixReuseBackend(backend)
        return cls(backend, contract, manifest, folder, decision, progress=progress)

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def max_length(self) -> int:
        return self.contract.max_length

    def _score(self, pairs: Sequence[tuple[str, str]], instruction: str | None) -> Any:
        from .scoring import score_encoded

        encoded = [self.contract.encode(q, d, instruction) for q, d in pairs]
        with self._lock:
            scored = score_encoded(self.backend, encoded, self.contract.pad_id, self.token_budget, self.progress)
        bad = [i for i, s in enumerate(scored.scores) if math.isnan(s)]
        if bad:  # never hide a NaN behind a sort order or a default score
            raise ArtifactError(f"{self.folder.name} produced NaN scores for pairs {bad[:10]}: the artifact is "
                                "broken on this device; re-run rerank-export parity")
        return scored

    def rerank(self, query: str, documents: Sequence[str], instruction: str | None = None,
               top_n: int | None = None, return_documents: bool = True) -> Ranking:
        """Documents ranked by p(yes) in [0, 1], best first (ties keep input order)."""
        if top_n is not None and top_n < 1:
            raise UsageError(f"top_n must be at least 1, got {top_n}")
        scored = self._score([(query, d) for d in documents], instruction)
        order = sorted(range(len(documents)), key=lambda i: -scored.scores[i])[:top_n]
        results = [RerankResult(i, scored.scores[i], documents[i] if return_documents else None) for i in order]
        truncated = [i for i, t in enumerate(scored.truncated) if t]
        return Ranking(results, scored.total_tokens, truncated)

    def score(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> list[float]:
        """p(yes) for each (query, document) pair, in order."""
        return self._score(pairs, instruction).scores

    def score_with_usage(self, pairs: Sequence[tuple[str, str]],
                         instruction: str | None = None) -> tuple[list[float], int, list[int]]:
        """Scores, total tokens and the indices of truncated documents (for the HTTP server)."""
        scored = self._score(pairs, instruction)
        return scored.scores, scored.total_tokens, [i for i, t in enumerate(scored.truncated) if t]
