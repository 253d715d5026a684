"""The HTTP server over a Reranker: vLLM/Jina/Cohere-shaped /v1/rerank, TEI's /rerank, raw /score, health,
models and a page.

Thin on purpose: parse and validate the request, call the reranker in a worker thread, shape the reply. Every
refusal, whatever the route or the body's depth, numbers or code points, is one JSON shape (errors.py), and the
server keeps serving. One module a concern, each importing only those before it:

    errors      the one error shape, RequestError, Cancelled
    requests    request bodies checked against api.py into dataclasses; Limits and their defaults
    tokens      texts cut to their byte cap, documents to their token caps; the request's token budget
    scheduling  chunks scored a turn at a time, first come first served; memory handed back
    responses   each route's answer
    keys        the API key from a file or the environment (the command line warns), checked, never logged
    guards      Host, API key, Content-Type, body size and deadline, and the JSON parser's bounds
    app         create_app: routes, error handlers, work bounded by the client and the timeout
    transport   bind, and uvicorn with read deadlines and framing errors in our shape
"""

from __future__ import annotations

from .app import create_app
from .errors import Cancelled, RequestError, error_body
from .guards import default_allowed_hosts, host_list, parse_json
from .requests import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_REQUEST_TOKENS,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    Limits,
    Options,
    positive_seconds,
)
from .scheduling import CHUNK_PAIRS, CHUNK_TOKENS, chunk_bounds, score_chunks
from .tokens import BYTES_PER_TOKEN, cut_utf8, text_cap
from .transport import PortUnavailable, bind, framing_error, run_server, server_config

__all__ = [
    "BYTES_PER_TOKEN", "CHUNK_PAIRS", "CHUNK_TOKENS", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_DOCUMENTS",
    "DEFAULT_MAX_REQUEST_TOKENS", "DEFAULT_READ_TIMEOUT_S", "DEFAULT_REQUEST_TIMEOUT_S", "Cancelled",
    "Limits", "Options", "PortUnavailable", "RequestError", "bind", "chunk_bounds", "create_app", "cut_utf8",
    "default_allowed_hosts", "error_body", "framing_error", "host_list", "parse_json", "positive_seconds",
    "run_server", "score_chunks", "server_config", "text_cap",
]
