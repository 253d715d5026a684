"""Calibration pairs for AWQ: the built-in set or a user's JSONL, encoded with the reranker contract.

User JSONL, one pair per line:
    {"query": "...", "document": "...", "instruction": "..."}     (instruction optional)
Eval-set lines with a "documents" list are also accepted; each document becomes one pair.
Calibration sees exactly the prompts the reranker scores: Contract.encode builds every sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .contract import Contract
from .errors import EvalSetError
from .evalsets import EvalSet, read_jsonl

log = logging.getLogger(__name__)

BUILTIN = "builtin"
DEFAULT_SAMPLES = 64
DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class CalibrationPair:
    query: str
    document: str
    instruction: str | None = None


@dataclass(frozen=True)
class CalibrationSet:
    """The encoded calibration prompts and where they came from (recorded in the manifest)."""

    name: str
    input_ids: tuple[tuple[int, ...], ...]
    available: int  # pairs in the source before sampling

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.input_ids)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "samples": len(self.input_ids), "available": self.available,
                "tokens": self.num_tokens}


def builtin_pairs() -> list[CalibrationPair]:
    """~70 pairs written for calibration: English, Chinese and code; short to a few hundred tokens."""
    path = Path(str(resources.files("rerank_export").joinpath("data/calibration.jsonl")))
    return _pairs(read_jsonl(path))


def read_pairs(path: str | Path) -> list[CalibrationPair]:
    """Pairs from a user's JSONL file (pair lines, or eval-set lines whose documents each become a pair)."""
    path = Path(path)
    if not path.is_file():
        raise EvalSetError(f"calibration file '{path}' not found; give a JSONL file of "
                           '{"query": ..., "document": ...} lines')
    pairs = _pairs(read_jsonl(path))
    if not pairs:
        raise EvalSetError(f"calibration file '{path}' has no (query, document) pairs")
    return pairs


def _pairs(evalset: EvalSet) -> list[CalibrationPair]:
    return [CalibrationPair(g.query, d, g.instruction) for g in evalset.groups for d in g.documents]


def select(pairs: Sequence[CalibrationPair], samples: int) -> list[CalibrationPair]:
    """`samples` pairs spread evenly over the source (so every language/domain section is kept)."""
    if samples < 1:
        raise EvalSetError(f"calibration samples must be positive, got {samples}")
    if samples >= len(pairs):
        if samples > len(pairs):
            log.info("calibration: %d samples asked, the set has %d; using all", samples, len(pairs))
        return list(pairs)
    step = len(pairs) / samples
    return [pairs[int(i * step)] for i in range(samples)]


def load_calibration(tokenizer: Any, spec: str | Path | None = None, samples: int = DEFAULT_SAMPLES,
                     max_length: int = DEFAULT_MAX_LENGTH) -> CalibrationSet:
    """Encode `samples` pairs from the built-in set (spec None/'builtin') or a JSONL file."""
    builtin = spec is None or str(spec) == BUILTIN
    pairs = builtin_pairs() if builtin else read_pairs(spec)
    contract = Contract(tokenizer, max_length=max_length)
    chosen = select(pairs, samples)
    ids = tuple(tuple(contract.encode(p.query, p.document, p.instruction).input_ids) for p in chosen)
    name = BUILTIN if builtin else str(spec)
    return CalibrationSet(name, ids, len(pairs))
