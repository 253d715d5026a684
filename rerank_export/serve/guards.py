"""What is refused before a request reaches a route: a Host it does not answer to, a missing or wrong API key,
another Content-Type, a body over its cap or late, and JSON the parser must not walk (NaN, integers of
thousands of digits, deep nesting, keys holding lone surrogates)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Collection
from typing import Any

from .errors import LongInteger, RequestError, error_response, show
from .requests import Limits

log = logging.getLogger(__name__)

OPEN_PATHS = {"/", "/health", "/favicon.ico"}  # the page and probes work without the key
MAX_JSON_DEPTH = 16  # our bodies nest 4 deep; a bound keeps every later step off Python's recursion limit
MAX_INT_DIGITS = 20  # longer integers are refused by name instead of hitting Python's 4,300-digit limit
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = {"0.0.0.0", "::", ""}


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
            return error_response(400, f"Host {show(headers.get('host', ''))} is not one this server answers "
                                       "to; start it with --allowed-hosts NAME to add it", param="Host")
        if self.api_key and path not in OPEN_PATHS and not _authorized(headers.get("authorization"), self.api_key):
            return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  "authentication_error")
        if scope["method"] == "POST":
            return self._body_refusal(headers)
        return None

    def _body_refusal(self, headers: Any) -> Any:
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":  # a cross-origin form post cannot send this type without a preflight
            return error_response(415, f"Content-Type {show(media)} is not accepted: send 'Content-Type: "
                                       "application/json'", param="Content-Type")
        length = headers.get("content-length", "")
        if re.fullmatch(r"[0-9]{1,30}", length) and int(length) > self.limits.max_body_bytes:
            return error_response(413, f"body of {length} bytes is over the cap of {self.limits.max_body_bytes} "
                                       "bytes")
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
