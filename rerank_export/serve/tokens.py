"""A request's texts as token ids: each text cut to a byte cap before anything tokenizes it, then each pair
tokenized once, its document cut on its ids (max_tokens_per_doc, truncate_prompt_tokens), within the request's
token budget."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .errors import Cancelled, RequestError
from .requests import Limits, Options
from .reranker import ServedReranker

if TYPE_CHECKING:
    from ..contract import Encoded

# Every text is cut to max_length x BYTES_PER_TOKEN UTF-8 bytes before anything tokenizes it. A document keeps
# at most max_length tokens anyway, and a token of ordinary text spans a few bytes (English about 4 a token, CJK
# 3 a character); only runs such as Qwen's 128-space or 114-byte comment-rule tokens reach 16 and beyond, so
# max_length tokens averaging over 16 bytes each are no real text: there the document is cut sooner, never later.
# One text's tokenization is then bounded whatever its size (8,192 tokens: 128 KiB, under a second here), and a
# request holding more than max_request_tokens x 16 bytes of text would be over its token budget anyway, so it is
# refused (413) before it is tokenized.
BYTES_PER_TOKEN = 16


def text_cap(max_length: int) -> int:
    """The most UTF-8 bytes of one text that are tokenized (BYTES_PER_TOKEN says why)."""
    return max_length * BYTES_PER_TOKEN


def cut_utf8(text: str, cap: int) -> str:
    """`text` cut to at most `cap` UTF-8 bytes, on a character boundary."""
    if len(text) * 4 <= cap:  # a character is at most 4 bytes: nothing to cut, and nothing encoded
        return text
    data = text[:cap].encode("utf-8")  # at least `cap` bytes when text has more than `cap` characters
    return text if len(text) <= cap and len(data) <= cap else data[:cap].decode("utf-8", "ignore")


def bound_texts(pairs: list[tuple[str, str]], max_length: int,
                limits: Limits) -> tuple[list[tuple[str, str]], set[int]]:
    """Pairs with each document cut to text_cap bytes (and the indices cut), before anything is tokenized.

    A query over text_cap bytes, or texts over max_request_tokens x BYTES_PER_TOKEN bytes in all (each query
    counted once per pair, as its tokens are), are refused with a 413 naming the cap.
    """
    cap, budget = text_cap(max_length), limits.max_request_tokens * BYTES_PER_TOKEN
    out, cut, total, sizes = [], set(), 0, {}
    for i, (query, document) in enumerate(pairs):
        if query not in sizes:
            sizes[query] = len(query.encode("utf-8"))
            if sizes[query] > cap:
                raise RequestError(413, f"a query of {sizes[query]} bytes is over this server's cap of {cap} bytes "
                                        f"per text (max length {max_length} x {BYTES_PER_TOKEN}); shorten it",
                                   param="query")
        kept = cut_utf8(document, cap)
        if kept is not document:
            cut.add(i)
        total += sizes[query] + len(kept.encode("utf-8"))
        if total > budget:
            raise RequestError(413, f"{len(pairs)} documents hold more than this server's cap of {budget} bytes of "
                                    f"text per request (--max-request-tokens x {BYTES_PER_TOKEN}): send fewer or "
                                    "shorter documents, or split the request", param="documents")
        out.append((query, kept))
    return out, cut


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled


def _document_cap(reranker: ServedReranker, query: str, options: Options) -> int | None:
    """How many of its own tokens a document may keep under max_tokens_per_doc / truncate_prompt_tokens."""
    caps = [options.max_tokens_per_doc] if options.max_tokens_per_doc else []
    if options.truncate_prompt_tokens:
        # The overhead counts the template's space before the document, which the document's first token usually
        # absorbs (contract.document_start): a pair cut here then ends one token short of the limit.
        overhead = len(reranker.encode(query, "", options.instruction).input_ids)
        if options.truncate_prompt_tokens <= overhead:
            raise RequestError(400, f"'truncate_prompt_tokens' {options.truncate_prompt_tokens} leaves no room for "
                                    f"the document: template, instruction and query take {overhead} tokens",
                               param="truncate_prompt_tokens")
        caps.append(options.truncate_prompt_tokens - overhead)
    return min(caps) if caps else None


def encode_pairs(reranker: ServedReranker, pairs: list[tuple[str, str]], options: Options, limit: int,
                 cancel: threading.Event | None = None) -> list[Encoded]:
    """Each pair tokenized once, its document cut on its token ids to its cap (the template and the query are
    never cut); a request over `limit` tokens in all is refused. Stops between pairs once `cancel` is set (each
    pair's text is bounded by bound_texts)."""
    caps: dict[str, int | None] = {}
    for query, _ in pairs:  # each query's cap first: one that leaves no room is refused before the budget is
        if query not in caps:
            _check(cancel)
            caps[query] = _document_cap(reranker, query, options)
    encoded, total = [], 0
    for query, document in pairs:
        _check(cancel)
        encoded.append(reranker.encode(query, document, options.instruction, caps[query]))
        total += len(encoded[-1].input_ids)
        if total > limit:
            raise RequestError(413, f"{len(pairs)} documents hold more than this server's budget of {limit} tokens "
                                    "per request (--max-request-tokens): send fewer or shorter documents, or "
                                    "split the request", param="documents")
    return encoded
