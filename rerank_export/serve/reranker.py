"""What the server uses of a reranker, and nothing else: runtime.Reranker is one; a test's wrapper can be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..contract import Encoded
    from ..manifest import Manifest
    from ..scoring import Scored


class ServedReranker(Protocol):
    """A loaded artifact as the server drives it: each pair encoded once, by `encode` (its document cut on token
    ids), then scored a chunk at a time by `score_encoded`. `manifest` names the model (source_model), its
    format, dtype and revision for /health, /v1/models and /info."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def max_length(self) -> int: ...

    def encode(self, query: str, document: str, instruction: str | None = None,
               document_tokens: int | None = None) -> Encoded: ...

    def score_encoded(self, encoded: Sequence[Encoded]) -> Scored: ...

    def release_memory(self) -> None: ...
