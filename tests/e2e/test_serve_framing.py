"""Malformed HTTP framing (issue 26 item 4) against the protocol `rerank-export serve` runs: every request h11
cannot parse is answered in our JSON error shape, not uvicorn's plain text, with no traceback in any log, and
the server keeps serving. Raw sockets, because no HTTP client sends these."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest

from .test_serve_bounds import DeadlineServer

pytestmark = pytest.mark.needs_fixtures

WAIT_S = 60  # only an upper bound on waiting for an answer
BODY = b'{"query": "q", "documents": ["a"]}'
HEAD = b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

MALFORMED = {  # what is sent -> the status of our answer
    "bad Content-Length": (HEAD + b"Content-Length: abc\r\n\r\n" + BODY, 400),
    "two different Content-Lengths": (HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n" + BODY, 400),
    "two Host headers": (HEAD + b"Host: other\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY, 400),
    "no Host header": (b"GET /health HTTP/1.1\r\n\r\n", 400),
    "a 200 KB header": (HEAD + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n", 431),
    "a bad chunk size": (CHUNKED + b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", 400),
    "a bad chunk after a good one": (CHUNKED + b"3\r\n{\"q\r\nzz\r\n", 400),
    "a bad chunk once a 415 is decided": (HEAD.replace(b"application/json", b"text/plain")
                                          + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n", 400),
    "an unknown Transfer-Encoding": (HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 400),  # h11 hints 501: ours 4xx
    "a garbage request line": (b"GARBAGE\r\n\r\n", 400),
    "a header line without a colon": (HEAD + b"no colon here\r\n\r\n", 400),
}


@pytest.fixture(scope="module")
def reranker(verified_artifacts):
    import rerank_export

    return rerank_export.load(verified_artifacts, device="cpu", max_length=256)


@pytest.fixture(scope="module")
def server(reranker):
    from rerank_export.serve import create_app

    with DeadlineServer(create_app(reranker, "tiny-reranker"), read_timeout=30) as base:
        yield base, int(base.rsplit(":", 1)[1])


class Records(logging.Handler):
    """Every record of uvicorn's and our loggers (uvicorn's do not propagate to the root, so caplog misses them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler, names = Records(), ["uvicorn", "uvicorn.error", "rerank_export"]
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield handler.records
    for name in names:
        logging.getLogger(name).removeHandler(handler)


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, then read until the server closes; a reset after its answer (unread bytes) ends it too."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return received


@pytest.mark.parametrize("sent,status", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_framing_gets_our_json_error(server, records, sent, status):
    base, port = server
    received = exchange(port, sent)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), received[:300]
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower(), head
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status, error
    assert error["message"].startswith("malformed HTTP request (") and "\n" not in error["message"], error
    assert httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=WAIT_S) \
        .status_code == 200
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in records]


def test_the_framing_message_names_the_fault(server):
    _, port = server
    sent, _ = MALFORMED["two different Content-Lengths"]
    body = exchange(port, sent).partition(b"\r\n\r\n")[2]
    assert "Content-Length" in json.loads(body)["error"]["message"]
    sent, _ = MALFORMED["a 200 KB header"]
    body = exchange(port, sent).partition(b"\r\n\r\n")[2]
    assert "header block is over this server's limit" in json.loads(body)["error"]["message"]


def test_framing_errors_map_to_4xx():
    import h11

    from rerank_export.serve import framing_error

    assert framing_error(h11.RemoteProtocolError("x", error_status_hint=501))[0] == 400
    assert framing_error(h11.RemoteProtocolError("Receive buffer too long", error_status_hint=431))[0] == 431
    status, message = framing_error(h11.RemoteProtocolError("y" * 5000))
    assert status == 400 and len(message) < 300
