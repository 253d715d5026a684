"""The one shape of every refusal, and the exceptions that carry one through the server.

Every refusal, whatever the route or the body's depth, numbers or code points, is vLLM's ErrorResponse:
{"error": {"message", "type", "param", "code"}}, `param` naming the field or null, `code` the HTTP status.
"""

from __future__ import annotations

import json
import re
from typing import Any

CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # escaped in error messages, which stay one line


class LongInteger:
    """An integer literal too long to be any field's value: kept as text so the refusal can name its field."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __str__(self) -> str:
        return self.digits


class RequestError(Exception):
    """A request the server refuses, with its HTTP status (and headers to send with it, if any)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.headers = headers


class Cancelled(Exception):
    """The request's client left or its timeout passed: the remaining chunks are not scored."""


def show(value: Any, limit: int = 40) -> str:
    """A value for an error message: JSON-ish, never longer than `limit` characters plus a count."""
    text = str(value) if isinstance(value, LongInteger) else json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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


def error_response(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                   headers: dict[str, str] | None = None) -> Any:
    """A refusal as the JSON response it is sent as (a 401 says which scheme to use)."""
    from fastapi.responses import JSONResponse

    headers = {**(headers or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return JSONResponse(error_body(status, message, kind, param), status, headers=headers or None)
