"""The FastAPI app: routes, the error handlers that keep every refusal in one shape, and each request's work
run in a worker thread that stops when its client leaves or its timeout passes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection
from importlib import resources
from typing import Any

from .. import api
from ..errors import ContractError, MissingExtra, RerankExportError, UsageError
from .errors import RequestError, error_response, show
from .guards import Guard, read_json
from .requests import DEFAULT_LIMITS, Limits, parse_rerank, parse_score, parse_tei
from .reranker import ServedReranker
from .responses import rerank_response, score_response, tei_info, tei_response
from .scheduling import Turns

try:  # FastAPI reads handler annotations from this module's globals, so Request must live here
    from fastapi import FastAPI, Request
except ImportError:  # the `serve` extra is optional: create_app() says what to install
    FastAPI = Request = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)


def create_app(reranker: ServedReranker, model_name: str | None = None, api_key: str | None = None,
               limits: Limits = DEFAULT_LIMITS, allowed_hosts: Collection[str] = ("*",)) -> Any:
    """A FastAPI app serving `reranker` (runtime.Reranker, or anything else that is a ServedReranker)."""
    if FastAPI is None:
        raise MissingExtra("fastapi", "serve")
    model = model_name or reranker.manifest.source_model
    app = FastAPI(title="rerank-export", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=api_key, limits=limits, allowed_hosts=allowed_hosts)
    _install_error_handlers(app)
    _install_routes(app, reranker, model, limits)
    return app


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
        return error_response(exc.status, exc.message, exc.kind, exc.param, exc.headers)

    @app.exception_handler(HTTPException)
    async def routing(request: Any, exc: HTTPException) -> Any:
        path = request.url.path
        where = f"{request.method} {path if len(path) <= 80 else path[:80] + '...'}"
        message = {404: f"no route {where}; this server answers {ROUTES_HINT}",
                   405: f"{where} is not allowed; use {(exc.headers or {}).get('Allow', 'another method')}"}
        return error_response(exc.status_code, message.get(exc.status_code, str(exc.detail)),
                              headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Any, exc: Exception) -> Any:  # a bug of ours: logged with its traceback
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details",
                              "server_error")


def _install_routes(app: Any, reranker: ServedReranker, model: str, limits: Limits) -> None:
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
