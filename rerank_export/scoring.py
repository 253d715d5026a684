"""Backend-independent scoring: encode with the contract, dedupe, sort, pack by tokens, pad, score.

The parity gate and the runtime both score through `score_pairs`, so an artifact's scores in the gate
and in production come from the same code path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from .contract import Contract, Encoded, pad_left

log = logging.getLogger(__name__)

DEFAULT_TOKEN_BUDGET = 8192  # padded tokens per forward pass when the caller gives no memory facts
# Padded tokens per forward pass: fixed, or a function of the batch's width (the memory model's growth).
TokenBudget = int | Callable[[int], int]


# Below this many shared tokens, the extra prefix pass costs more than it saves.
MIN_PREFIX_TOKENS = 8


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every row, leaving each row >= 1 tail token."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1  # the scored token must be in the tail
    n = 0
    first = rows[0]
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return max(0, n)


class Backend(Protocol):
    """What every artifact backend provides: one relevance logit (yes minus no) per row, fp32."""

    name: str

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class OutOfMemory(Exception):
    """Raised by a backend when the device ran out of memory; the batcher halves and retries."""


@dataclass
class Scored:
    scores: list[float]
    truncated: list[bool]
    total_tokens: int
    batches: int = 0
    retries: int = field(default=0)


def plan_batches(lengths: Sequence[int], token_budget: TokenBudget, max_batch: int = 256) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with padded tokens <= its budget.

    Sorting by length keeps padding small; a sequence longer than the budget still gets a batch of one.
    A callable budget is asked at each batch's own width (its longest sequence).
    """
    budget_at = token_budget if callable(token_budget) else lambda _width: token_budget
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # the first is the longest
        if current and ((len(current) + 1) * width > budget_at(width) or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def score_encoded(
    backend: Backend,
    encoded: Sequence[Encoded],
    pad_id: int,
    token_budget: TokenBudget = DEFAULT_TOKEN_BUDGET,
    progress: bool = False,
) -> Scored:
    """p(yes) for pre-encoded pairs; identical sequences are scored once."""
    unique: dict[tuple[int, ...], int] = {}
    slot = [unique.setdefault(tuple(e.input_ids), len(unique)) for e in encoded]
    seqs = list(unique)
    logits = np.full(len(seqs), np.nan, dtype=np.float64)
    batches = plan_batches([len(s) for s in seqs], token_budget)
    retries = 0
    queue = list(batches)
    bar = tqdm(total=len(seqs), desc=f"score {backend.name}", disable=not progress, leave=False)
    while queue:
        batch = queue.pop(0)
        ids, mask = pad_left([seqs[i] for i in batch], pad_id)
        try:
            out = backend.logits(np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64))
        except OutOfMemory:
            if len(batch) == 1:
                raise
            half = math.ceil(len(batch) / 2)
            log.warning("out of memory on a batch of %d; retrying as two halves", len(batch))
            queue[:0] = [batch[:half], batch[half:]]
            retries += 1
            continue
        logits[batch] = np.asarray(out, dtype=np.float64).reshape(-1)
        bar.update(len(batch))
    bar.close()
    probs = sigmoid(logits)
    return Scored(
        scores=[float(probs[s]) for s in slot],
        truncated=[e.truncated for e in encoded],
        total_tokens=sum(len(e.input_ids) for e in encoded),
        batches=len(batches) + retries,
        retries=retries,
    )


def score_pairs(
    backend: Backend,
    contract: Contract,
    pairs: Sequence[tuple[str, str]],
    instruction: str | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    progress: bool = False,
) -> Scored:
    """p(yes) for (query, document) pairs through `backend`."""
    encoded = [contract.encode(q, d, instruction) for q, d in pairs]
    return score_encoded(backend, encoded, contract.pad_id, token_budget, progress)
