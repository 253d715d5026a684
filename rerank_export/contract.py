"""The Qwen3-Reranker contract: the prompt template, the yes/no tokens, truncation and padding.

Everything that turns (instruction, query, document) into token ids lives here, so the reference,
every exporter, the parity gate and the runtime see exactly the same inputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import ContractError, ModelError, first_line

# From the Qwen3-Reranker model card, verbatim.
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
BODY_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
DOCUMENT_MARKER = "<Document>:"  # ends the part of a pair that depends on its instruction and query alone
YES_TOKEN = "yes"
NO_TOKEN = "no"
DEFAULT_MAX_LENGTH = 8192
# Far beyond any Qwen3 context (40,960 positions); it only keeps the memory arithmetic in range.
MAX_LENGTH_LIMIT = 1 << 20
TEMPLATE_ID = "qwen3-reranker-v1"  # recorded in manifests; bump if the template ever changes


@dataclass(frozen=True)
class Encoded:
    """One pair's token ids and whether its document was shortened to fit."""

    input_ids: list[int]
    truncated: bool


# A local folder holds a tokenizer when it has one of these (a fast tokenizer's file, or BPE's two tables).
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))


def load_tokenizer(path: str | Path, revision: str | None = None) -> Any:
    """Load a tokenizer with left padding; a missing folder or hub id, or a folder without a tokenizer, is a
    one-line ModelError."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if folder.is_dir() and not any(all((folder / n).is_file() for n in names) for names in TOKENIZER_FILES):
        raise ModelError(f"'{path}' holds no tokenizer (tokenizer.json, or vocab.json and merges.txt): "
                         "give the model's folder or hub id")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), revision=revision, padding_side="left")
    except Exception as exc:  # OSError, ValueError, tokenizers' own: each library words it differently
        raise ModelError(f"cannot load a tokenizer from '{path}': {first_line(exc)}") from exc
    if tok.pad_token_id is None:
        raise ModelError(f"tokenizer at '{path}' has no pad token; Qwen3 tokenizers use <|endoftext|>")
    return tok


def score_template_path() -> Path:
    """The prompt above as a chat template over the roles system (instruction), query and document.

    Tools that pair texts through chat roles (vLLM's /rerank and /score, sentence-transformers >= 5.4
    CrossEncoder) render exactly this module's prompt with it; tests/unit/test_contract.py checks that.
    """
    from importlib import resources

    return Path(str(resources.files("rerank_export").joinpath("data/qwen3_reranker_score.jinja")))


def save_tokenizer(tokenizer: Any, folder: str | Path) -> None:
    """Save the tokenizer into an artifact with the score template as its chat template.

    Qwen3's own chat template renders a (query, document) pair as nothing useful, so without this
    `CrossEncoder(artifact)` refuses to load and vLLM needs --chat-template.
    """
    original = tokenizer.chat_template
    tokenizer.chat_template = score_template_path().read_text()
    try:
        tokenizer.save_pretrained(str(folder))
    finally:
        tokenizer.chat_template = original


def single_token_id(tokenizer: Any, word: str) -> int:
    """The id of `word` when it encodes to exactly one token; the head depends on it."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelError(f"tokenizer encodes '{word}' as {len(ids)} tokens; a Qwen3 reranker needs one")
    return int(ids[0])


def format_body(query: str, document: str, instruction: str | None = None) -> str:
    return BODY_TEMPLATE.format(
        instruction=instruction or DEFAULT_INSTRUCTION, query=query, document=document
    )


def prompt_text(query: str, document: str, instruction: str | None = None) -> str:
    """The whole prompt of one pair as text, as a user outside rerank-export renders it from the card."""
    return PREFIX + format_body(query, document, instruction) + SUFFIX


class Contract:
    """Tokenizer-bound prompt builder. Cheap to call; the prefix/suffix ids are computed once."""

    def __init__(self, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 1:
            raise ContractError(f"max length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length

    @cached_property
    def yes_id(self) -> int:
        return single_token_id(self.tokenizer, YES_TOKEN)

    @cached_property
    def no_id(self) -> int:
        return single_token_id(self.tokenizer, NO_TOKEN)

    @cached_property
    def prefix_ids(self) -> list[int]:
        return self._ids(PREFIX)

    @cached_property
    def suffix_ids(self) -> list[int]:
        return self._ids(SUFFIX)

    @cached_property
    def document_marker_ids(self) -> list[int] | None:
        """The marker's token ids as they appear inside encoded pairs, or None where this tokenizer merges
        them with their neighbours (checked on a probe pair). Everything up to its first occurrence depends
        only on the instruction and query, so it splits a row the same way whatever else is in its batch."""
        ids = self._ids(DOCUMENT_MARKER)
        probe = self.encode("a query", "a document").input_ids
        found = any(probe[i:i + len(ids)] == ids for i in range(len(probe)))
        return ids if ids and found else None

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def body_budget(self) -> int:
        return self.max_length - len(self.prefix_ids) - len(self.suffix_ids)

    def encode(self, query: str, document: str, instruction: str | None = None,
               document_tokens: int | None = None) -> Encoded:
        """Token ids for one pair. Only the document is ever shortened, from its end: to fit max length, and to
        at most `document_tokens` of its own tokens when given (counted where the pair holds them, see
        document_start), so a cut document is tokenized once, never decoded and encoded again."""
        if not query or not query.strip():
            raise ContractError("the query is empty")
        if document_tokens is not None and document_tokens < 1:
            raise ContractError(f"a document keeps at least one token, got a cap of {document_tokens}")
        budget = self.body_budget()
        head = self._ids(format_body(query, "", instruction))
        # The head must fit with at least one document token after it.
        if len(head) >= budget:
            raise ContractError(
                f"instruction + query take {len(head)} tokens but only {budget} fit in max length "
                f"{self.max_length} after the template; shorten the query or raise --max-length"
            )
        body = self._ids(format_body(query, document, instruction))
        keep = budget if document_tokens is None else min(budget, document_start(head, body) + document_tokens)
        # Same as the model card's right truncation of the whole body: the head is never reached.
        return Encoded(self.prefix_ids + body[:keep] + self.suffix_ids, len(body) > keep)


def document_start(head: Sequence[int], body: Sequence[int]) -> int:
    """Where a document's own tokens begin in its pair's body: after the ids the body shares with `head`, the
    body of an empty document. The template's space before the document usually merges into its first token
    (' Paris'); where it stays a token of its own (before a digit: ' ', '2'), it is the template's."""
    start = 0
    for a, b in zip(head, body):
        if a != b:
            break
        start += 1
    return start


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad to the longest sequence: the scored token is then always the last position."""
    width = max(len(s) for s in sequences)
    ids = [[pad_id] * (width - len(s)) + list(s) for s in sequences]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in sequences]
    return ids, mask


def write_rope_theta(config_path: Path, default: float) -> None:
    """transformers 5 writes only `rope_parameters`; older loaders read a top-level `rope_theta`."""
    cfg = json.loads(config_path.read_text())
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", default))
    cfg["rope_theta"] = theta
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
