"""A request body checked field by field against the contract (api.py) and read into one of the request
dataclasses below; every refusal names its field. Nothing here tokenizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import api
from .errors import RequestError, show

DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
# 128 documents of 1,024 tokens: about a minute of the 0.6B model on 2 CPU cores (docs/selection.md).
DEFAULT_MAX_REQUEST_TOKENS = 131072
DEFAULT_REQUEST_TIMEOUT_S = 300.0
# A request's header block, and then its body, must each arrive within this; slower ones (slowloris, a body that
# stops) are closed. An 8 MiB body (the default cap) in 30 s needs about 2.3 Mbit/s.
DEFAULT_READ_TIMEOUT_S = 30.0
# vLLM's values of these meaning "no cut" (max_tokens_per_doc: 0 is its default; -1: the model's max).
NO_CUT = {"max_tokens_per_doc": 0, "truncate_prompt_tokens": -1}
# Fields checked here beside api.py's tables, because their values are validated, not only compared with one
# harmless default. vLLM's request bookkeeping: every pooling request carries it, RerankRequest().model_dump()
# included. (docs/http-api.md, "The request contract", lists them with api.py's.)
BOOKKEEPING = {
    "request_id": "the answer's id ends with it (vLLM)",
    "user": "a string naming the end user (OpenAI, vLLM); accepted, nothing is accounted per user",
    "cache_salt": "1 to 1,024 characters; accepted: no cache is shared between requests here",
}
RERANK_ONLY = {"relevant_spans": "Cohere v2; only {\"mode\": \"disabled\"}: no spans are computed"}
RELEVANT_SPANS_KEYS = ("mode", "threshold", "max_spans")  # Cohere's RerankRelevantSpans
MAX_CACHE_SALT = 1024  # vLLM's field limit


@dataclass(frozen=True)
class Limits:
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS  # documents x tokens, after truncation
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S  # for the header block, then for the body


DEFAULT_LIMITS = Limits()


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
