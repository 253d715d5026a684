"""The HTTP server over a Reranker: vLLM/Jina/Cohere-shaped /v1/rerank, raw /score, health, models, a page.

Thin on purpose: parse and validate the request, call the Reranker in a worker thread, shape the reply.
Every bad request gets a 4xx with {"error": {"message", "type", "code"}} and the server keeps serving.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .errors import ContractError, MissingExtra, RerankExportError, UsageError

try:  # FastAPI reads handler annotations from this module's globals, so Request must live here
    from fastapi import FastAPI, Request
except ImportError:  # the `serve` extra is optional: create_app() says what to install
    FastAPI = Request = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
OPEN_PATHS = {"/", "/health", "/favicon.ico"}  # the page and probes work without the key


class RequestError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class Limits:
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    instruction: str | None


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _document_text(doc: Any, index: int, key: str = "documents") -> str:
    if isinstance(doc, dict) and "text" in doc:
        doc = doc["text"]
    if not isinstance(doc, str):
        raise RequestError(400, f"{key}[{index}] must be a string or {{\"text\": string}}, "
                                f"got {type(doc).__name__}")
    return doc


def _documents(value: Any, limits: Limits, key: str = "documents") -> list[str]:
    if not isinstance(value, list):
        raise RequestError(400, f"'{key}' must be a list of strings or {{\"text\": string}} objects")
    if not value:
        raise RequestError(400, f"'{key}' is empty: send at least one document")
    if len(value) > limits.max_documents:
        raise RequestError(413, f"{len(value)} documents is over this server's cap of {limits.max_documents}; "
                                "split the request")
    return [_document_text(d, i, key) for i, d in enumerate(value)]


def _query(value: Any, key: str = "query") -> str:
    if not isinstance(value, str):
        raise RequestError(400, f"'{key}' must be a string")
    if not value.strip():
        raise RequestError(400, f"'{key}' is empty")
    return value


def parse_rerank(body: Any, limits: Limits) -> RerankRequest:
    """Validate a /v1/rerank body; top_n above the document count is clamped, as vLLM and Cohere do."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    _optional_str(body, "model")
    query = _query(body.get("query"))
    documents = _documents(body.get("documents"), limits)
    top_n = body.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise RequestError(400, f"'top_n' must be a positive integer, got {json.dumps(top_n)}")
    return_documents = body.get("return_documents", True)
    if not isinstance(return_documents, bool):
        raise RequestError(400, "'return_documents' must be true or false")
    top = None if top_n is None else min(top_n, len(documents))
    return RerankRequest(query, documents, top, return_documents, _optional_str(body, "instruction"))


def parse_score(body: Any, limits: Limits) -> tuple[list[tuple[str, str]], str | None]:
    """/score: {"pairs": [[query, document], ...]} or vLLM's {"text_1": q or [q], "text_2": [d]}."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    instruction = _optional_str(body, "instruction")
    if "pairs" in body:
        pairs = body["pairs"]
        if not isinstance(pairs, list) or not pairs:
            raise RequestError(400, "'pairs' must be a non-empty list of [query, document]")
        if len(pairs) > limits.max_documents:
            raise RequestError(413, f"{len(pairs)} pairs is over this server's cap of {limits.max_documents}")
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
            raise RequestError(400, "each pair must be [query, document]")
        return [(_query(q, f"pairs[{i}][0]"), _document_text(d, i, "pairs")) for i, (q, d) in
                enumerate(pairs)], instruction
    if "text_1" not in body or "text_2" not in body:
        raise RequestError(400, "send 'pairs': [[query, document], ...] or 'text_1' and 'text_2'")
    docs = _documents(body["text_2"] if isinstance(body["text_2"], list) else [body["text_2"]], limits, "text_2")
    queries = body["text_1"] if isinstance(body["text_1"], list) else [body["text_1"]] * len(docs)
    if len(queries) != len(docs):
        raise RequestError(400, f"'text_1' has {len(queries)} items and 'text_2' {len(docs)}; give one query "
                                "or one per document")
    return [(_query(q, f"text_1[{i}]"), d) for i, (q, d) in enumerate(zip(queries, docs))], instruction


def rerank_response(reranker: Any, req: RerankRequest, model: str) -> dict[str, Any]:
    ranking = reranker.rerank(req.query, req.documents, req.instruction, req.top_n, req.return_documents)
    results = [{"index": r.index, "relevance_score": r.relevance_score,
                **({"document": {"text": r.document}} if req.return_documents else {})}
               for r in ranking.results]
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": model, "results": results,
            "usage": {"total_tokens": ranking.total_tokens, "truncated_documents": ranking.truncated}}


def score_response(reranker: Any, pairs: list[tuple[str, str]], instruction: str | None,
                   model: str) -> dict[str, Any]:
    scores, tokens, truncated = reranker.score_with_usage(pairs, instruction)
    return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "model": model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"total_tokens": tokens, "truncated_documents": truncated}}


def create_app(reranker: Any, model_name: str | None = None, api_key: str | None = None,
               limits: Limits = Limits()) -> Any:
    """A FastAPI app serving `reranker` (anything with rerank/score_with_usage/manifest)."""
    if FastAPI is None:
        raise MissingExtra("fastapi", "serve")
    model = model_name or reranker.manifest.source_model
    app = FastAPI(title="rerank-export", docs_url=None, redoc_url=None)
    _install_middleware(app, api_key, limits)
    _install_routes(app, reranker, model, limits)
    return app


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Any:
    from fastapi.responses import JSONResponse

    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def _authorized(header: str | None, api_key: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def _install_middleware(app: Any, api_key: str | None, limits: Limits) -> None:
    @app.middleware("http")
    async def guard(request: Any, call_next: Any) -> Any:
        if api_key and request.url.path not in OPEN_PATHS and \
                not _authorized(request.headers.get("authorization"), api_key):
            return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                          "authentication_error")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body_bytes:
            return _error(413, f"body of {length} bytes is over the cap of {limits.max_body_bytes} bytes")
        return await call_next(request)


async def read_json(request: Any, limits: Limits) -> Any:
    """The body as JSON, read in chunks so a body without Content-Length still hits the size cap."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise RequestError(413, f"body is over the cap of {limits.max_body_bytes} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON: {getattr(exc, 'msg', exc)}") from None


async def _call(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    try:
        return await run_in_threadpool(fn, *args)
    except (ContractError, UsageError) as exc:
        raise RequestError(400, str(exc)) from None
    except RerankExportError as exc:
        log.error("scoring failed: %s", exc)
        raise RequestError(500, str(exc), "server_error") from None


def _install_routes(app: Any, reranker: Any, model: str, limits: Limits) -> None:
    from fastapi.responses import HTMLResponse

    @app.exception_handler(RequestError)
    async def refused(request: Any, exc: RequestError) -> Any:
        return _error(exc.status, exc.message, exc.kind)

    async def rerank(request: Request) -> Any:
        req = parse_rerank(await read_json(request, limits), limits)
        return await _call(rerank_response, reranker, req, model)

    app.add_api_route("/v1/rerank", rerank, methods=["POST"])
    app.add_api_route("/rerank", rerank, methods=["POST"])

    async def score(request: Request) -> Any:
        pairs, instruction = parse_score(await read_json(request, limits), limits)
        return await _call(score_response, reranker, pairs, instruction, model)

    app.add_api_route("/score", score, methods=["POST"])
    app.add_api_route("/v1/score", score, methods=["POST"])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model, "format": reranker.manifest.format,
                "max_length": reranker.max_length}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "rerank-export",
                                            "format": reranker.manifest.format, "max_model_len": reranker.max_length}]}

    page = resources.files("rerank_export").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page
