"""rerank-export: export, parity-check and serve Qwen3 rerankers. The public API is re-exported here."""

from .runtime import Reranker, load

__all__ = ["Reranker", "load"]
