"""Work bounds of the real server (issue 12 item 3): a per-request token budget, a timeout, and a request
whose client leaves stops being scored. A gate around the real reranker holds its first chunk so each case
is decided by events, never by how fast this machine is."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from .test_serve import ServerThread, assert_error

pytestmark = pytest.mark.needs_fixtures

WAIT_S = 60  # only an upper bound on waiting for an event; no test asserts a duration


class GatedReranker:
    """The real reranker; score_with_usage records each chunk's size and, while closed, waits at the gate."""

    def __init__(self, reranker) -> None:
        self.reranker, self.chunks = reranker, []
        self.entered, self.gate = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.reranker, name)

    def score_with_usage(self, pairs, instruction=None):
        self.chunks.append(len(pairs))
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return self.reranker.score_with_usage(pairs, instruction)


@pytest.fixture(scope="module")
def reranker(verified_artifacts):
    import rerank_export

    return rerank_export.load(verified_artifacts, device="cpu", max_length=256)


def serve(reranker, **limits):
    from rerank_export.serve import Limits, create_app

    return ServerThread(create_app(reranker, "tiny-reranker", limits=Limits(**limits)))


DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris."]


def test_the_token_budget_counts_documents_times_tokens(reranker):
    with serve(reranker) as base:
        body = {"query": "capital of France?", "documents": DOCS}
        tokens = httpx.post(f"{base}/v1/rerank", json=body, timeout=WAIT_S).json()["usage"]["total_tokens"]
    with serve(reranker, max_request_tokens=tokens) as base:
        assert httpx.post(f"{base}/v1/rerank", json=body, timeout=WAIT_S).status_code == 200
    with serve(reranker, max_request_tokens=tokens - 1) as base:
        assert_error(httpx.post(f"{base}/v1/rerank", json=body, timeout=WAIT_S), 413,
                     f"budget of {tokens - 1} tokens", "documents")
        pairs = {"pairs": [["capital of France?", d] for d in DOCS]}
        assert_error(httpx.post(f"{base}/score", json=pairs, timeout=WAIT_S), 413, "--max-request-tokens")
        assert httpx.post(f"{base}/v1/rerank", json={**body, "documents": DOCS[:1]}, timeout=WAIT_S).status_code \
            == 200


def many_documents() -> list[str]:
    from rerank_export.serve import CHUNK_PAIRS

    return [f"document {i} about Paris" for i in range(3 * CHUNK_PAIRS)]  # three chunks


def test_a_request_past_its_timeout_gets_a_408_and_stops(reranker):
    from rerank_export.serve import CHUNK_PAIRS

    gated = GatedReranker(reranker)
    with serve(gated, request_timeout=0.5) as base:
        r = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": many_documents()}, timeout=WAIT_S)
        assert_error(r, 408, "--request-timeout")
        gated.gate.set()  # the first chunk finishes after the answer; the next two must never start
        gated.chunks.clear()
        assert httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=WAIT_S) \
            .status_code == 200
    assert gated.chunks == [1], f"the timed-out request went on scoring: chunks {gated.chunks} (of {CHUNK_PAIRS})"


def raw_request(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_a_client_that_leaves_stops_its_work(reranker, caplog):
    import json

    gated = GatedReranker(reranker)
    caplog.set_level(logging.INFO, logger="rerank_export.serve")
    with serve(gated) as base:
        body = json.dumps({"query": "q", "documents": many_documents()}).encode()
        sock = raw_request(int(base.rsplit(":", 1)[1]), body)
        assert gated.entered.wait(WAIT_S), "the request never reached the reranker"
        sock.close()
        wait_for(lambda: any("client left" in r.getMessage() for r in caplog.records), "the server saw it leave")
        gated.gate.set()
        assert httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=WAIT_S) \
            .status_code == 200
    assert gated.chunks[1:] == [1], f"the abandoned request went on scoring: chunks {gated.chunks}"
