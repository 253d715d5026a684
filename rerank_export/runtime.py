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
from typing import TYPE_CHECKING, Any

from .contract import DEFAULT_MAX_LENGTH, Contract, Encoded, load_tokenizer
from .errors import ArtifactError, NoArtifactFits, RerankExportError, UsageError, first_line
from .manifest import Manifest
from .plan import plan
from .select import Decision
from .select import token_budget as fitting_budget

if TYPE_CHECKING:
    from .scoring import Scored, TokenBudget

log = logging.getLogger(__name__)

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
    from .preflight import preflight
    from .select import why_nothing

    broken: dict[str, str] = {}
    while True:  # an artifact that fails to load is passed over, with a warning, for the next that fits
        decision, manifests = plan(artifacts_dir, device, memory_budget, max_length, allow_unverified,
                                   verify=True, check=preflight, broken=broken)
        if decision.chosen is None:
            raise NoArtifactFits(why_nothing(decision))
        if decision.note:
            log.warning("%s", decision.note)
        folder = Path(decision.chosen.folder)
        try:
            return Reranker.from_folder(folder, manifests[str(folder)], decision, prefix_reuse, progress)
        except (RerankExportError, OSError, ValueError, KeyError, RuntimeError) as exc:
            # Out-of-memory is not the artifact's fault: the selector's arithmetic was wrong; say so as is.
            if "out of memory" in str(exc).lower():
                raise
            log.warning("passing over %s: it failed to load: %s", folder, first_line(exc))
            broken[str(folder)] = f"failed to load ({first_line(exc)})"


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
        # The budget at the longest sequence, for reports; batches are sized at their own width (below).
        self.token_budget = token_budget or (decision.token_budget if decision else contract.max_length)
        self._fixed_budget = token_budget is not None or decision is None
        self.progress = progress
        self._lock = threading.Lock()  # one forward pass at a time: they would only fight over cores/memory

    def release_memory(self) -> None:
        """Give back what the backend caches between batches (onnxruntime's arena); a no-op for the rest."""
        release = getattr(self.backend, "release_memory", None)
        if release is not None:
            with self._lock:
                release()

    @classmethod
    def from_folder(cls, folder: Path, manifest: Manifest, decision: Decision, prefix_reuse: bool = True,
                    progress: bool = False) -> Reranker:
        from .formats import get_format
        from .host import cap_cuda_memory
        from .prefix import PrefixReuseBackend

        spec = get_format(manifest.format)
        contract = _load_contract(folder, manifest, decision.max_length)
        log.info("loading %s on %s (token budget %d)", folder, decision.device.kind, decision.token_budget)
        fraction = cap_cuda_memory(decision.device)
        if fraction is not None:
            log.info("CUDA allocator capped at %.3f of the card (--memory)", fraction)
        backend = spec.loader(folder, manifest, decision.device.kind)
        if prefix_reuse and spec.prefix_reuse == "wrapper":
            backend = PrefixReuseBackend(backend)
        elif not prefix_reuse and spec.prefix_reuse == "own":
            backend.prefix_reuse = False
        return cls(backend, contract, manifest, folder, decision, progress=progress)

    def _batch_budget(self) -> TokenBudget:
        """Padded tokens per batch at the batch's own width: where the memory model grows with length
        (attention that keeps length x length scores), batches of short documents may hold more tokens."""
        if self._fixed_budget:
            return self.token_budget
        usable, manifest = self.decision.device.usable_bytes, self.manifest
        return lambda width: fitting_budget(manifest, usable, width)

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def max_length(self) -> int:
        return self.contract.max_length

    def encode(self, query: str, document: str, instruction: str | None = None,
               document_tokens: int | None = None) -> Encoded:
        """One pair's token ids under this artifact's contract (its template, at this max length), the document
        cut to `document_tokens` of its own tokens when given: what score_encoded takes."""
        return self.contract.encode(query, document, instruction, document_tokens)

    def score_encoded(self, encoded: Sequence[Encoded]) -> Scored:
        """p(yes) of pairs already encoded (by encode), with their tokens and which were truncated."""
        from .scoring import score_encoded

        with self._lock:
            scored = score_encoded(self.backend, encoded, self.contract.pad_id, self._batch_budget(), self.progress)
        bad = [i for i, s in enumerate(scored.scores) if math.isnan(s)]
        if bad:  # never hide a NaN behind a sort order or a default score
            raise ArtifactError(f"{self.folder.name} produced NaN scores for pairs {bad[:10]}: the artifact is "
                                "broken on this device; re-run rerank-export parity")
        return scored

    def _score(self, pairs: Sequence[tuple[str, str]], instruction: str | None) -> Scored:
        return self.score_encoded([self.encode(q, d, instruction) for q, d in pairs])

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
