"""The HTTP server over a Reranker: vLLM/Jina/Cohere-shaped /v1/rerank, raw /score, health, models, a page.

Thin on purpose: parse and validate the request, call the Reranker in a worker thread, shape the reply.
Every refusal, whatever the route or the body's depth, numbers or code points, is one JSON shape (vLLM's
ErrorResponse): {"error": {"message", "type", "param", "code"}}, `param` naming the field or null, `code` the
HTTP status; and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import hmac
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any

from . import api
from .errors import ContractError, MissingExtra, RerankExportError, UsageError
from .manifest import TOOLKIT_VERSION

try:  # FastAPI reads handler annotations from this module's globals, so Request must live here
    from fastapi import FastAPI, Request
except ImportError:  # the `serve` extra is optional: create_app() says what to install
    FastAPI = Request = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
# 128 documents of 1,024 tokens: about a minute of the 0.6B model on 2 CPU cores (README, "Which artifact").
DEFAULT_MAX_REQUEST_TOKENS = 131072
DEFAULT_REQUEST_TIMEOUT_S = 300.0
# A request's header block, and then its body, must each arrive within this; slower ones (slowloris, a body that
# stops) are closed. An 8 MiB body (the default cap) in 30 s needs about 2.3 Mbit/s.
DEFAULT_READ_TIMEOUT_S = 30.0
# Between chunks a request checks for a gone client or its timeout, and waiting requests take their turn: a
# one-document request waits for at most one chunk of another's, however many documents that one has.
CHUNK_PAIRS = 16
CHUNK_TOKENS = 4096  # a chunk of long documents ends earlier (a pair longer than this is a chunk of its own)
# After a request of this many tokens the freed activations go back to the OS (gc, then glibc's malloc_trim):
# without it one 8,192-token document leaves the process at its peak RSS for good.
RELEASE_AFTER_TOKENS = 2048
# Every text is cut to max_length x BYTES_PER_TOKEN UTF-8 bytes before anything tokenizes it. A document keeps
# at most max_length tokens anyway, and a token of ordinary text spans a few bytes (English about 4 a token, CJK
# 3 a character); only runs such as Qwen's 128-space or 114-byte comment-rule tokens reach 16 and beyond, so
# max_length tokens averaging over 16 bytes each are no real text: there the document is cut sooner, never later.
# One text's tokenization is then bounded whatever its size (8,192 tokens: 128 KiB, under a second here), and a
# request holding more than max_request_tokens x 16 bytes of text would be over its token budget anyway, so it is
# refused (413) before it is tokenized.
BYTES_PER_TOKEN = 16
OPEN_PATHS = {"/", "/health", "/favicon.ico"}  # the page and probes work without the key
MAX_JSON_DEPTH = 16  # our bodies nest 4 deep; a bound keeps every later step off Python's recursion limit
MAX_INT_DIGITS = 20  # longer integers are refused by name instead of hitting Python's 4,300-digit limit
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# vLLM's values of these meaning "no cut" (max_tokens_per_doc: 0 is its default; -1: the model's max).
NO_CUT = {"max_tokens_per_doc": 0, "truncate_prompt_tokens": -1}
# Fields checked here beside api.py's tables, because their values are validated, not only compared with one
# harmless default. vLLM's request bookkeeping: every pooling request carries it, RerankRequest().model_dump()
# included. (The README's field table lists them with api.py's.)
BOOKKEEPING = {
    "request_id": "the answer's id ends with it (vLLM)",
    "user": "a string naming the end user (OpenAI, vLLM); accepted, nothing is accounted per user",
    "cache_salt": "1 to 1,024 characters; accepted: no cache is shared between requests here",
}
RERANK_ONLY = {"relevant_spans": "Cohere v2; only {\"mode\": \"disabled\"}: no spans are computed"}
RELEVANT_SPANS_KEYS = ("mode", "threshold", "max_spans")  # Cohere's RerankRelevantSpans
MAX_CACHE_SALT = 1024  # vLLM's field limit
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # escaped in error messages, which stay one line
TEI_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # TEI's names; int8/int4 stay ours
SCORE_LABEL = "relevance"  # the one label of the artifacts' classifier head (formats/baseline.py)
WILDCARD_BINDS = {"0.0.0.0", "::", ""}


class LongInteger:
    """An integer literal too long to be any field's value: kept as text so the refusal can name its field."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __str__(self) -> str:
        return self.digits


class PortUnavailable(RerankExportError):
    """The address to serve on cannot be bound (in use, not ours, not an address of this machine)."""


class RequestError(Exception):
    """A request the server refuses, with its HTTP status (and headers to send with it, if any)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.headers = headers


class Cancelled(Exception):
    """The request's client left or its timeout passed: the remaining chunks are not scored."""


@dataclass(frozen=True)
class Limits:
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS  # documents x tokens, after truncation
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S  # for the header block, then for the body


@dataclass(frozen=True)
class Options:
    """What every route reads besides its texts (api.COMMON)."""

    instruction: str | None = None
    max_tokens_per_doc: int | None = None  # each document's own tokens
    truncate_prompt_tokens: int | None = None  # each whole pair, cut from the document's end
    request_id: str | None = None  # vLLM's: the answer's id ends with it


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    instruction: str | None
    options: Options = Options()


@dataclass(frozen=True)
class TeiRequest:
    query: str
    texts: list[str]
    return_text: bool
    truncate: bool


@dataclass(frozen=True)
class ScoreRequest:
    pairs: list[tuple[str, str]]
    options: Options = Options()


def show(value: Any, limit: int = 40) -> str:
    """A value for an error message: JSON-ish, never longer than `limit` characters plus a count."""
    text = str(value) if isinstance(value, LongInteger) else json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _text(value: str, key: str) -> str:
    """`value`, refused when it holds a lone UTF-16 surrogate (JSON allows "\\ud800"; no tokenizer does)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(400, f"'{key}' holds a lone UTF-16 surrogate {value[exc.start]!a} at character "
                                f"{exc.start}: send valid Unicode text", param=key) from None
    return value


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"'{key}' must be a string, got {type(value).__name__}", param=key)
    return None if value is None else _text(value, key)


def _name(key: str, limit: int = 40) -> str:
    return key if len(key) <= limit else f"{key[:limit]}... ({len(key)} characters)"


def _only(obj: dict[str, Any], allowed: tuple[str, ...], where: str, why: str = "") -> None:
    """Refuse a key of `obj` outside `allowed`, naming it: nothing a client sends is silently dropped."""
    extra = next((key for key in obj if key not in allowed), None)
    if extra is not None:
        holds = " and ".join(f"'{a}'" for a in allowed)
        raise RequestError(400, f"'{where}.{_name(extra)}' is not a field here: '{where}' holds only {holds}"
                                f"{f' ({why})' if why else ''}", param=f"{where}.{_name(extra)}")


def _text_part(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise RequestError(400, f"'{where}' must be {{\"type\": \"text\", \"text\": string}}", param=where)
    if part.get("type") != "text":
        raise RequestError(400, f"'{where}.type' must be \"text\": this reranker reads text parts only (got "
                                f"{show(part.get('type'))})", param=f"{where}.type")
    _only(part, ("type", "text"), where)
    if not isinstance(part.get("text"), str):
        raise RequestError(400, f"'{where}.text' must be a string", param=f"{where}.text")
    return _text(part["text"], f"{where}.text")


def _content_text(parts: Any, where: str) -> str:
    """vLLM's {"content": [{"type": "text", "text": ...}, ...]}: its text parts joined."""
    if not isinstance(parts, list):
        raise RequestError(400, f"'{where}' must be a list of {{\"type\": \"text\", \"text\": string}} parts",
                           param=where)
    return "".join(_text_part(part, f"{where}[{i}]") for i, part in enumerate(parts))


def _document_dict(doc: dict[str, Any], where: str) -> Any:
    """The text of {"text": ...} (Cohere, Jina) or {"content": [text parts]} (vLLM); other keys are refused."""
    if "content" in doc:
        _only(doc, ("content",), where)
        return _content_text(doc["content"], f"{where}.content")
    _only(doc, ("text",), where, "a text-only reranker: send other fields inside the text")
    return doc.get("text")


def _document_text(doc: Any, index: int, key: str = "documents") -> str:
    where = f"{key}[{index}]"
    if isinstance(doc, dict):
        doc = _document_dict(doc, where)
    if not isinstance(doc, str):
        raise RequestError(400, f"'{where}' must be a string, {{\"text\": string}} or {{\"content\": "
                                f"[{{\"type\": \"text\", \"text\": string}}]}}", param=where)
    return _text(doc, where)


def _one_or_many(value: Any) -> Any:
    """One document sent bare (vLLM's RerankRequest takes a string or one {"content": ...}) as a list of it."""
    return [value] if isinstance(value, (str, dict)) else value


def _documents(value: Any, limits: Limits, key: str = "documents") -> list[str]:
    if not isinstance(value, list):
        raise RequestError(400, f"'{key}' must be a list of strings or {{\"text\": string}} objects", param=key)
    if not value:
        raise RequestError(400, f"'{key}' is empty: send at least one document", param=key)
    if len(value) > limits.max_documents:
        raise RequestError(413, f"{len(value)} documents is over this server's cap of {limits.max_documents}; "
                                "split the request", param=key)
    return [_document_text(d, i, key) for i, d in enumerate(value)]


def _query(value: Any, key: str = "query") -> str:
    if not isinstance(value, str):
        raise RequestError(400, f"'{key}' must be a string", param=key)
    if not value.strip():
        raise RequestError(400, f"'{key}' is empty", param=key)
    return _text(value, key)


def _top_n(value: Any, count: int) -> int | None:
    """top_n above the document count is clamped, as vLLM and Cohere do; 0 means all, as in vLLM."""
    if value is None or value == 0 and not isinstance(value, bool):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError(400, f"'top_n' must be a positive integer (0: all), got {show(value)}", param="top_n")
    return min(value, count)


def _token_count(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or (type(value) is int and value == NO_CUT[key]):  # type(): True == 1 and False == 0
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, f"'{key}' must be a positive integer ({NO_CUT[key]}: no cut), got {show(value)}",
                           param=key)
    return value


def _cache_salt(body: dict[str, Any]) -> None:
    salt = _optional_str(body, "cache_salt")
    if salt is not None and not 0 < len(salt) <= MAX_CACHE_SALT:
        raise RequestError(400, f"'cache_salt' must be 1 to {MAX_CACHE_SALT} characters, got {len(salt)} (as in "
                                "vLLM)", param="cache_salt")


def _relevant_spans(value: Any) -> None:
    """Cohere v2's relevant_spans: accepted when disabled (no spans, which is what we answer), else refused."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise RequestError(400, "'relevant_spans' must be an object such as {\"mode\": \"disabled\"}",
                           param="relevant_spans")
    _only(value, RELEVANT_SPANS_KEYS, "relevant_spans")
    if value.get("mode") != "disabled":
        raise RequestError(400, f"'relevant_spans.mode' {show(value.get('mode'))} is not supported here: this "
                                "reranker scores whole documents and returns no spans; send {\"mode\": "
                                "\"disabled\"} or leave it out", param="relevant_spans.mode")


def _instruction(body: dict[str, Any]) -> str | None:
    """The top-level instruction, or vLLM's chat_template_kwargs.instruction (the same if both are sent)."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise RequestError(400, "'chat_template_kwargs' must be an object such as {\"instruction\": string}",
                           param="chat_template_kwargs")
    if kwargs:
        _only(kwargs, ("instruction",), "chat_template_kwargs", "the Qwen3 template's only variable")
    top = _optional_str(body, "instruction")
    nested = _optional_str(kwargs, "instruction") if kwargs else None
    if top is not None and nested is not None and top != nested:
        raise RequestError(400, "'instruction' and 'chat_template_kwargs.instruction' differ: send one",
                           param="instruction")
    return top if top is not None else nested


def parse_options(body: Any, kind: str) -> Options:
    """Check every field against the contract (api.py) and read the ones all routes share."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    checked_here = {**BOOKKEEPING, **(RERANK_ONLY if kind == "rerank" else {})}
    unread = api.unread_field({k: v for k, v in body.items() if k not in checked_here}, kind)
    if unread is not None:
        raise RequestError(400, unread[1], param=unread[0])
    for key in ("model", "user"):
        _optional_str(body, key)
    _cache_salt(body)
    if kind == "rerank":
        _relevant_spans(body.get("relevant_spans"))
    return Options(_instruction(body), _token_count(body, "max_tokens_per_doc"),
                   _token_count(body, "truncate_prompt_tokens"), _optional_str(body, "request_id"))


def parse_rerank(body: Any, limits: Limits) -> RerankRequest:
    """Validate a rerank body (vLLM, Cohere v1/v2, Jina)."""
    options = parse_options(body, "rerank")
    query = _query(body.get("query"))
    documents = _documents(_one_or_many(body.get("documents")), limits)
    top = _top_n(body.get("top_n"), len(documents))
    return_documents = _flag(body, "return_documents", True)
    return RerankRequest(query, documents, top, return_documents, options.instruction, options)


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"'{key}' must be true or false", param=key)
    return value


def parse_tei(body: dict[str, Any], limits: Limits) -> TeiRequest:
    """TEI's /rerank: {"query", "texts", "return_text", "truncate"}."""
    unread = api.unread_field(body, "tei")
    if unread is not None:
        raise RequestError(400, unread[1], param=unread[0])
    texts = body.get("texts")
    if isinstance(texts, list) and any(isinstance(t, dict) for t in texts):
        raise RequestError(400, "'texts' must be strings (TEI's shape)", param="texts")
    return TeiRequest(_query(body.get("query")), _documents(texts, limits, "texts"),
                      _flag(body, "return_text", False), _flag(body, "truncate", False))


def _pairs(pairs: Any, limits: Limits) -> list[tuple[str, str]]:
    if not isinstance(pairs, list) or not pairs:
        raise RequestError(400, "'pairs' must be a non-empty list of [query, document]", param="pairs")
    if len(pairs) > limits.max_documents:
        raise RequestError(413, f"{len(pairs)} pairs is over this server's cap of {limits.max_documents}",
                           param="pairs")
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise RequestError(400, "each pair must be [query, document]", param="pairs")
    return [(_query(q, f"pairs[{i}][0]"), _document_text(d, i, "pairs")) for i, (q, d) in enumerate(pairs)]


def parse_score(body: Any, limits: Limits) -> ScoreRequest:
    """/score: {"pairs": [[query, document], ...]} or vLLM's {"text_1": q or [q], "text_2": [d]}."""
    options = parse_options(body, "score")
    return ScoreRequest(_score_pairs(body, limits), options)


def _score_pairs(body: dict[str, Any], limits: Limits) -> list[tuple[str, str]]:
    if "pairs" in body:
        return _pairs(body["pairs"], limits)
    shape = next((pair for pair in api.SCORE_SHAPES if set(pair) <= set(body)), None)
    if shape is None:
        raise RequestError(400, "send 'pairs': [[query, document], ...] or one of " +
                                ", ".join(f"'{a}' and '{b}'" for a, b in api.SCORE_SHAPES))
    first, second = shape
    docs = _documents(body[second] if isinstance(body[second], list) else [body[second]], limits, second)
    queries = body[first] if isinstance(body[first], list) else [body[first]]
    if len(queries) == 1:  # one query for every document, as vLLM does
        queries = queries * len(docs)
    if len(queries) != len(docs):
        raise RequestError(400, f"'{first}' has {len(queries)} items and '{second}' {len(docs)}; give one "
                                "query or one per document", param=first)
    return [(_query(_document_text(q, i, first), f"{first}[{i}]"), d)
            for i, (q, d) in enumerate(zip(queries, docs))]


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


def _pair_tokens(reranker: Any, pairs: list[tuple[str, str]], instruction: str | None, limit: int,
                 cancel: threading.Event | None = None) -> list[int]:
    """Each pair's token count (after truncation); a request over `limit` tokens in all is refused. Stops
    between pairs once `cancel` is set (each pair's text is bounded by bound_texts)."""
    counts, total = [], 0
    for query, document in pairs:
        _check(cancel)
        counts.append(len(reranker.contract.encode(query, document, instruction).input_ids))
        total += counts[-1]
        if total > limit:
            raise RequestError(413, f"{len(pairs)} documents hold more than this server's budget of {limit} tokens "
                                    "per request (--max-request-tokens): send fewer or shorter documents, or "
                                    "split the request", param="documents")
    return counts


def _document_cap(reranker: Any, query: str, options: Options) -> int | None:
    """How many of its own tokens a document may keep under max_tokens_per_doc / truncate_prompt_tokens."""
    caps = [options.max_tokens_per_doc] if options.max_tokens_per_doc else []
    if options.truncate_prompt_tokens:
        overhead = len(reranker.contract.encode(query, "", options.instruction).input_ids)
        if options.truncate_prompt_tokens <= overhead:
            raise RequestError(400, f"'truncate_prompt_tokens' {options.truncate_prompt_tokens} leaves no room for "
                                    f"the document: template, instruction and query take {overhead} tokens",
                               param="truncate_prompt_tokens")
        caps.append(options.truncate_prompt_tokens - overhead)
    return min(caps) if caps else None


def truncate_documents(reranker: Any, pairs: list[tuple[str, str]], options: Options,
                       cancel: threading.Event | None = None) -> tuple[list[tuple[str, str]], set[int]]:
    """Pairs with each document cut to its cap (the template's suffix and the query are never cut)."""
    if options.max_tokens_per_doc is None and options.truncate_prompt_tokens is None:
        return pairs, set()
    tokenizer, out, cut = reranker.contract.tokenizer, [], set()
    for i, (query, document) in enumerate(pairs):
        _check(cancel)
        cap = _document_cap(reranker, query, options)
        ids = tokenizer(document, add_special_tokens=False)["input_ids"]
        if cap is not None and len(ids) > cap:
            document = tokenizer.decode(ids[:cap])
            cut.add(i)
        out.append((query, document))
    return out, cut


class Turns:
    """The model, one chunk at a time, first come first served.

    A request that has scored a chunk queues again behind the requests already waiting, so requests take
    turns chunk by chunk and a one-document request waits for one chunk of a large one, not for all of it.
    (The Reranker's threading.Lock promises no order: the thread that releases it usually takes it again.)
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self._busy = False

    @property
    def waiting(self) -> int:
        """How many requests wait for their turn (for tests and logs)."""
        with self._guard:
            return len(self._queue)

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._guard:
            mine = threading.Event() if self._busy else None
            if mine is not None:
                self._queue.append(mine)
            self._busy = True
        if mine is not None:
            mine.wait()  # set by the holder's release: the turn is handed over, never raced for
        try:
            yield
        finally:
            with self._guard:
                if self._queue:
                    self._queue.popleft().set()
                else:
                    self._busy = False


def chunk_bounds(counts: list[int], max_pairs: int = CHUNK_PAIRS, max_tokens: int = CHUNK_TOKENS) -> list[range]:
    """Consecutive index ranges of at most max_pairs pairs and max_tokens tokens (at least one pair each)."""
    chunks, start, tokens = [], 0, 0
    for i, count in enumerate(counts):
        if i > start and (i - start >= max_pairs or tokens + count > max_tokens):
            chunks.append(range(start, i))
            start, tokens = i, 0
        tokens += count
    return [*chunks, range(start, len(counts))] if counts else chunks


def release_memory(reranker: Any) -> None:
    """Hand freed memory back to the OS: the backend's cache (onnxruntime's arena), Python's cycles, then
    glibc's free heap pages (no-op elsewhere)."""
    reranker.release_memory()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def score_chunks(reranker: Any, pairs: list[tuple[str, str]], options: Options, limits: Limits,
                 cancel: threading.Event, turns: Turns | None = None) -> tuple[list[float], int, list[int]]:
    """Scores, tokens and truncated indices, a chunk per turn, stopping once `cancel` is set.

    Each pair's score is its own (the runtime pads and masks), so cutting a request into chunks, or taking
    turns with other requests between them, changes no score.
    """
    pairs, cut = bound_texts(pairs, reranker.max_length, limits)
    pairs, cut_by_tokens = truncate_documents(reranker, pairs, options, cancel)
    cut |= cut_by_tokens
    counts = _pair_tokens(reranker, pairs, options.instruction, limits.max_request_tokens, cancel)
    turns = turns or Turns()
    scores: list[float] = []
    tokens, truncated = 0, set(cut)
    for chunk in chunk_bounds(counts):
        with turns.turn():
            if cancel.is_set():  # checked with the turn in hand: a request cancelled while queued scores nothing
                raise Cancelled
            s, t, tr = reranker.score_with_usage(pairs[chunk.start:chunk.stop], options.instruction)
        scores, tokens = scores + s, tokens + t
        truncated.update(chunk.start + i for i in tr)
    if tokens >= RELEASE_AFTER_TOKENS:
        release_memory(reranker)
    return scores, tokens, sorted(truncated)


def _usage(tokens: int, truncated: list[int]) -> dict[str, Any]:
    # vLLM's UsageInfo requires prompt_tokens; a reranker generates nothing, so total = prompt
    return {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_documents": truncated}


def rerank_response(reranker: Any, req: RerankRequest, model: str, limits: Limits, turns: Turns,
                    cancel: threading.Event) -> dict[str, Any]:
    scores, tokens, truncated = score_chunks(reranker, [(req.query, d) for d in req.documents],
                                             req.options, limits, cancel, turns)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:req.top_n]  # stable: ties keep input order
    # vLLM's RerankResult requires `document`: without return_documents its text is null, not the key absent
    results = [{"index": i, "relevance_score": scores[i],
                "document": {"text": req.documents[i] if req.return_documents else None}} for i in order]
    return {"id": _answer_id("rerank", req.options), "model": model, "results": results,
            "usage": _usage(tokens, truncated)}


def _answer_id(kind: str, options: Options) -> str:
    return f"{kind}-{options.request_id if options.request_id is not None else uuid.uuid4().hex}"


def tei_response(reranker: Any, req: TeiRequest, limits: Limits, turns: Turns,
                 cancel: threading.Event) -> list[dict[str, Any]]:
    """TEI's answer: a bare list of {index, score[, text]}, best first."""
    scores, _, truncated = score_chunks(reranker, [(req.query, t) for t in req.texts], Options(), limits, cancel,
                                        turns)
    if truncated and not req.truncate:  # TEI refuses over-long input unless asked to truncate
        raise RequestError(413, f"texts[{truncated[0]}] is longer than this server's max length of "
                                f"{reranker.max_length} tokens; send 'truncate': true to cut it", param="texts")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [{"index": i, "score": scores[i], **({"text": req.texts[i]} if req.return_text else {})} for i in order]


def tei_info(reranker: Any, model: str, limits: Limits, threads: int) -> dict[str, Any]:
    """TEI's GET /info (tei-client reads it before its first rerank): what this server is and its bounds."""
    manifest = reranker.manifest
    return {"model_id": model, "model_sha": manifest.source_revision,
            "model_dtype": TEI_DTYPES.get(manifest.dtype, manifest.dtype),
            "model_type": {"reranker": {"id2label": {"0": SCORE_LABEL}, "label2id": {SCORE_LABEL: 0}}},
            "max_concurrent_requests": threads,  # requests worked on at once; more wait, none is refused
            "max_input_length": reranker.max_length, "max_batch_tokens": CHUNK_TOKENS,
            "max_batch_requests": CHUNK_PAIRS, "max_client_batch_size": limits.max_documents,
            "auto_truncate": False,  # TEI's /rerank here cuts a text only when asked ('truncate': true)
            "tokenization_workers": threads, "version": TOOLKIT_VERSION, "sha": None, "docker_label": None}


def score_response(reranker: Any, req: ScoreRequest, model: str, limits: Limits, turns: Turns,
                   cancel: threading.Event) -> dict[str, Any]:
    scores, tokens, truncated = score_chunks(reranker, req.pairs, req.options, limits, cancel, turns)
    return {"id": _answer_id("score", req.options), "object": "list", "model": model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": _usage(tokens, truncated)}


def default_allowed_hosts(bind_host: str) -> list[str]:
    """Host headers a server bound to `bind_host` answers: that address and localhost; any for 0.0.0.0/::.

    A wildcard bind is a deliberate choice to be reached by names this process cannot know; there
    --allowed-hosts is how to close it.
    """
    return ["*"] if bind_host in WILDCARD_BINDS else sorted({bind_host.lower(), *LOCAL_HOSTS})


def host_list(text: str) -> list[str]:
    """An argparse type for --allowed-hosts: comma-separated names or addresses, '*' for any."""
    import argparse

    hosts = [h.strip().lower().strip("[]") for h in text.split(",") if h.strip()]
    if not hosts or any(not re.fullmatch(r"[a-z0-9.:_*-]{1,253}", h) for h in hosts):
        raise argparse.ArgumentTypeError(f"expected host names or addresses separated by commas, got {text[:80]!r}")
    return hosts


def positive_seconds(text: str) -> float:
    """An argparse type for a finite positive number of seconds."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text[:40]!r}")
    return value


def create_app(reranker: Any, model_name: str | None = None, api_key: str | None = None,
               limits: Limits = Limits(), allowed_hosts: Collection[str] = ("*",)) -> Any:
    """A FastAPI app serving `reranker` (anything with rerank/score_with_usage/manifest)."""
    if FastAPI is None:
        raise MissingExtra("fastapi", "serve")
    model = model_name or reranker.manifest.source_model
    app = FastAPI(title="rerank-export", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=api_key, limits=limits, allowed_hosts=allowed_hosts)
    _install_error_handlers(app)
    _install_routes(app, reranker, model, limits)
    return app


def error_body(status: int, message: str, kind: str = "invalid_request_error",
               param: str | None = None) -> dict[str, Any]:
    """The one error shape every refusal uses (vLLM's ErrorResponse; `code` is the HTTP status)."""
    return {"error": {"message": _one_line(message), "type": kind, "param": _one_line(param), "code": status}}


def _one_line(text: str | None) -> str | None:
    """`text` with lone surrogates and control characters escaped (\\ud800, \\n): an error may quote a client's
    key, and must still encode and stay one line."""
    if text is None:
        return None
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    headers = {**(headers or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return JSONResponse(error_body(status, message, kind, param), status, headers=headers or None)


def _authorized(header: str | None, api_key: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def _host_name(header: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class Guard:
    """Refusals decided from the request line and headers alone, before any body is read (pure ASGI)."""

    def __init__(self, app: Any, api_key: str | None, limits: Limits, allowed_hosts: Collection[str]) -> None:
        self.app, self.api_key, self.limits = app, api_key, limits
        self.allowed_hosts = None if "*" in allowed_hosts else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        await self.app(scope, body_deadline(receive, self.limits.read_timeout), send)

    def refusal(self, scope: dict) -> Any:
        from starlette.datastructures import Headers

        headers, path = Headers(scope=scope), scope["path"]
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")) not in self.allowed_hosts:
            # DNS rebinding: a web page's own name pointing at us; browsers send that name as Host
            return _error(400, f"Host {show(headers.get('host', ''))} is not one this server answers to; "
                               "start it with --allowed-hosts NAME to add it", param="Host")
        if self.api_key and path not in OPEN_PATHS and not _authorized(headers.get("authorization"), self.api_key):
            return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "authentication_error")
        if scope["method"] == "POST":
            return self._body_refusal(headers)
        return None

    def _body_refusal(self, headers: Any) -> Any:
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":  # a cross-origin form post cannot send this type without a preflight
            return _error(415, f"Content-Type {show(media)} is not accepted: send 'Content-Type: "
                               "application/json'", param="Content-Type")
        length = headers.get("content-length", "")
        if re.fullmatch(r"[0-9]{1,30}", length) and int(length) > self.limits.max_body_bytes:
            return _error(413, f"body of {length} bytes is over the cap of {self.limits.max_body_bytes} bytes")
        return None


def body_deadline(receive: Any, seconds: float) -> Any:
    """`receive`, raising a 408 (and closing the connection) when the body has not all arrived `seconds` after
    the headers; a trickled body counts as late as a stalled one. Messages after the body pass as they are."""
    deadline, done = time.monotonic() + seconds, False

    async def bounded() -> Any:
        nonlocal done
        if done:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            log.info("closing a connection whose body took more than %gs", seconds)
            raise RequestError(408, f"the body did not arrive within this server's {seconds:g} s (--read-timeout)",
                               headers={"Connection": "close"}) from None
        done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return bounded


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_int(text: str) -> int | LongInteger:
    return LongInteger(text) if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


def _where(path: tuple | None) -> str | None:
    """A walked path, ((None, "documents"), 0) -> 'documents[0]'; None for the body itself."""
    parts = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).lstrip(".") or None


def _check_key(key: str, path: tuple | None) -> None:
    """A key is never scored, but a refusal may name it: one holding a lone surrogate could not be encoded."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = _where(path)
        raise RequestError(400, f"a key of {f'{where!r}' if where else 'the body'} holds a lone UTF-16 surrogate "
                                f"{key[exc.start]!a} at character {exc.start}: send valid Unicode text",
                           param=where) from None


def check_tree(body: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and keys holding a lone surrogate, walked without recursion.

    Paths are kept as linked tuples and spelled out only for a refusal: an 8 MiB body can hold millions of nodes.
    """
    stack: list[tuple[Any, int, tuple | None]] = [(body, 1, None)]
    while stack:
        node, level, path = stack.pop()
        if not isinstance(node, (dict, list)) or not node:
            continue
        if level >= MAX_JSON_DEPTH:  # its children would sit one level deeper than allowed
            raise RequestError(400, f"body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            for key in node:
                _check_key(key, path)
            stack.extend((child, level + 1, (path, key)) for key, child in node.items())
        else:
            stack.extend((child, level + 1, (path, i)) for i, child in enumerate(node))


def parse_json(raw: bytes) -> Any:
    """The body as JSON: no NaN/Infinity, integers of at most MAX_INT_DIGITS digits, nesting bounded, keys
    valid Unicode."""
    try:
        body = json.loads(raw, parse_constant=_parse_constant, parse_int=_parse_int)
    except RecursionError:
        raise RequestError(400, f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise RequestError(400, f"body is not valid JSON: {getattr(exc, 'msg', exc)}") from None
    check_tree(body)
    return body


async def read_json(request: Any, limits: Limits) -> Any:
    """The body as JSON, read in chunks so a body without Content-Length still hits the size cap."""
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestError(413, f"body is over the cap of {limits.max_body_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "the client closed the connection before the body ended") from None
    return parse_json(b"".join(chunks))


async def _call(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    try:
        return await run_in_threadpool(fn, *args)
    except (ContractError, UsageError) as exc:
        raise RequestError(400, str(exc)) from None
    except RerankExportError as exc:
        log.error("scoring failed: %s", exc)
        raise RequestError(500, str(exc), "server_error") from None


async def _client_gone(request: Any) -> None:
    """Returns when the client disconnects (the body is read by then, so the next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned request's Cancelled: expected, not "never retrieved"


async def run_bounded(request: Any, limits: Limits, fn: Any, *args: Any) -> Any:
    """fn(*args, cancel) in a worker thread; cancelled when the client leaves or the timeout passes."""
    cancel = threading.Event()
    work = asyncio.ensure_future(_call(fn, *args, cancel))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=limits.request_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.add_done_callback(_retrieve)
        if gone in done:
            log.info("client left %s: its remaining documents are not scored", request.url.path)
            raise RequestError(499, "the client closed the connection")
        log.info("%s ran past %gs: its remaining documents are not scored", request.url.path,
                 limits.request_timeout)
        raise RequestError(408, f"the request ran past this server's {limits.request_timeout:g} s timeout "
                                "(--request-timeout): send fewer or shorter documents")
    finally:
        cancel.set()
        gone.cancel()


ROUTES_HINT = f"POST {', '.join(api.RERANK_ROUTES + api.SCORE_ROUTES)}; GET /health, /v1/models, /info, /"


def check_model(body: dict[str, Any], model: str) -> None:
    """A request naming another model is a 404, as in vLLM: silently scoring with this one would mislead."""
    asked = body.get("model")
    if asked is not None and asked != model:
        raise RequestError(404, f"the model {show(asked)} is not served here; this server serves {show(model)} "
                                "(GET /v1/models)", "NotFoundError", "model")


def _install_error_handlers(app: Any) -> None:
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def refused(request: Any, exc: RequestError) -> Any:
        return _error(exc.status, exc.message, exc.kind, exc.param, exc.headers)

    @app.exception_handler(HTTPException)
    async def routing(request: Any, exc: HTTPException) -> Any:
        path = request.url.path
        where = f"{request.method} {path if len(path) <= 80 else path[:80] + '...'}"
        message = {404: f"no route {where}; this server answers {ROUTES_HINT}",
                   405: f"{where} is not allowed; use {(exc.headers or {}).get('Allow', 'another method')}"}
        return _error(exc.status_code, message.get(exc.status_code, str(exc.detail)), headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Any, exc: Exception) -> Any:  # a bug of ours: logged with its traceback
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details", "server_error")


def _install_routes(app: Any, reranker: Any, model: str, limits: Limits) -> None:
    from fastapi.responses import HTMLResponse

    turns = app.state.turns = Turns()  # one queue for the one model, shared by every scoring route

    async def rerank(request: Request) -> Any:
        body = await read_json(request, limits)
        if request.url.path == "/rerank" and isinstance(body, dict) and "texts" in body:
            return await run_bounded(request, limits, tei_response, reranker, parse_tei(body, limits), limits, turns)
        req = parse_rerank(body, limits)
        check_model(body, model)
        return await run_bounded(request, limits, rerank_response, reranker, req, model, limits, turns)

    for path in api.RERANK_ROUTES:
        app.add_api_route(path, rerank, methods=["POST"])

    async def score(request: Request) -> Any:
        body = await read_json(request, limits)
        req = parse_score(body, limits)
        check_model(body, model)
        return await run_bounded(request, limits, score_response, reranker, req, model, limits, turns)

    for path in api.SCORE_ROUTES:
        app.add_api_route(path, score, methods=["POST"])

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model, "format": reranker.manifest.format,
                "max_length": reranker.max_length}

    created = int(time.time())  # OpenAI's Model.created: when this server started serving it

    @app.get("/info")
    async def info() -> dict[str, Any]:
        from anyio.to_thread import current_default_thread_limiter

        # requests are parsed, tokenized and scored in these worker threads
        return tei_info(reranker, model, limits, int(current_default_thread_limiter().total_tokens))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                            "owned_by": "rerank-export", "root": model, "parent": None,
                                            "format": reranker.manifest.format, "max_model_len": reranker.max_length}]}

    page = resources.files("rerank_export").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index() -> str:
        return page


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is one line, before any 'serving'."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: rebinding after a restart
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "stop what runs there or pick another --port" if exc.errno == 98 else "check --host and --port"
        raise PortUnavailable(f"cannot serve on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def server_config(app: Any, host: str, port: int, limits: Limits = Limits(), log_level: str = "info") -> Any:
    """uvicorn's Config for `app`: h11 with read deadlines (see read_deadline_protocol)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          http=functools.partial(read_deadline_protocol(), read_timeout=limits.read_timeout))


def run_server(app: Any, sock: socket.socket, log_level: str = "info", limits: Limits = Limits()) -> None:
    """uvicorn on an already-bound socket (see bind)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    uvicorn.Server(server_config(app, host, port, limits, log_level)).run(sockets=[sock])


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(error_body(408, f"the request's headers did not arrive within this server's {seconds:g} s "
                                      "(--read-timeout)")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


def framing_error(exc: BaseException | None) -> tuple[int, str]:
    """Status and message for a request h11 cannot parse; h11's own error says what is malformed."""
    hint = getattr(exc, "error_status_hint", 400)
    status = hint if 400 <= hint < 500 else 400  # h11 hints 501 for an unknown Transfer-Encoding: a client's fault
    what = str(exc) or type(exc).__name__
    what = what if len(what) <= 120 else f"{what[:120]}..."
    if status == 431:
        what = f"its header block is over this server's limit: {what}"
    return status, f"malformed HTTP request ({what}); the connection is closed: fix the request's framing"


def _framing_answer(conn: Any, status: int, message: str) -> bytes:
    """`message` in our error shape, as h11 frames it on `conn` (which then expects the connection to close)."""
    import h11

    body = json.dumps(error_body(status, message)).encode()
    head = h11.Response(status_code=status, reason=HTTPStatus(status).phrase.encode(),
                        headers=[(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                 (b"connection", b"close")])
    return conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


@functools.lru_cache(maxsize=1)
def read_deadline_protocol() -> type:
    """uvicorn's h11 protocol with a deadline on reading each request.

    uvicorn bounds only the idle time between requests (timeout_keep_alive) and has no header timeout: a
    client that sends half a header block, or stops mid-body after being answered without its body being
    read (a 413 or 415), holds its connection for ever. Here each wait for a request (from the connection,
    or from the previous answer) has `read_timeout` for the headers to arrive; past it the connection gets a
    408 and is closed. The body's own deadline is body_deadline's, inside the app, which answers a 408; if
    the app has already answered, the protocol closes the connection after a second `read_timeout`.

    A request h11 cannot parse (bad or conflicting Content-Length, two Host headers, a header block over h11's
    limit, a bad chunk size) is answered in our JSON error shape, not uvicorn's plain text, unless an answer
    has already begun; then the connection is only closed.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ReadDeadlineH11(H11Protocol):
        def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.read_timeout = read_timeout
            self.read_timer: asyncio.TimerHandle | None = None
            self.waiting_after: Any = None  # the request answered before this wait (None: a new connection)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm_read_timer()

        def on_response_complete(self) -> None:
            self.arm_read_timer()  # before super(): a pipelined request may start in there
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this inside its `except h11.RemoteProtocolError`: that error says what is malformed
            status, message = framing_error(sys.exc_info()[1])
            log.info("closing a connection from %s: %s", self.client, message)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # its app, if still running, sees a disconnect and answers nothing
                cycle.message_event.set()
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    self.transport.write(_framing_answer(self.conn, status, message))
                except h11.LocalProtocolError:  # h11 will not frame an answer in this state: closing says enough
                    pass
            self.transport.close()

        def arm_read_timer(self) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
            self.waiting_after = self.cycle
            self.read_timer = self.loop.call_later(self.read_timeout, self.read_timed_out)

        def read_timed_out(self) -> None:
            self.read_timer = None
            cycle = self.cycle
            if self.transport.is_closing() or (cycle is not self.waiting_after and not cycle.more_body):
                return  # gone, or the whole request arrived
            if cycle is self.waiting_after:  # no new request's headers: a half-sent or never-sent one
                if self.conn.trailing_data[0]:  # bytes of a request arrived: say why it is closed
                    self.transport.write(_timeout_response(self.read_timeout))
                log.info("closing a connection from %s: no complete request headers within %gs",
                         self.client, self.read_timeout)
                self.transport.close()
            elif cycle.response_complete:  # answered without its body, which is still coming: stop waiting
                log.info("closing a connection from %s: the rest of an answered request's body never came",
                         self.client)
                self.transport.close()
            else:  # the app is reading the body under body_deadline, which will answer a 408; a backstop
                self.read_timer = self.loop.call_later(self.read_timeout, self.read_timed_out)

    return ReadDeadlineH11
