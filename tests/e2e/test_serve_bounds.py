"""Work bounds of the real server (issue 12 item 3): a per-request token budget, a timeout, a request whose
client leaves stops being scored, a small request takes its turn between a large one's chunks, and slow or
half-sent requests are closed (raw sockets against the protocol `rerank-export serve` runs). A gate around the
real reranker holds its first chunk so each case is decided by events, never by how fast this machine is."""

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
    """The real reranker; score_encoded records each chunk's size and, while closed, waits at the gate."""

    def __init__(self, reranker) -> None:
        self.reranker, self.chunks = reranker, []
        self.entered, self.gate = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.reranker, name)

    def score_encoded(self, encoded):
        self.chunks.append(len(encoded))
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return self.reranker.score_encoded(encoded)


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


def test_a_small_request_takes_its_turn_between_the_chunks_of_a_large_one(reranker):
    """Issue 12 item 3, fairness: a one-document request sent while a three-chunk request is scoring is
    scored after that request's current chunk, not after all of it (ordering of events, not times)."""
    gated = GatedReranker(reranker)
    app = create_app_for(gated)
    done: list[str] = []

    def post(name: str, documents: list[str]) -> None:
        r = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": documents}, timeout=WAIT_S)
        assert r.status_code == 200, r.text
        done.append(name)

    with ServerThread(app) as base:
        large = threading.Thread(target=post, args=("large", many_documents()))
        large.start()
        assert gated.entered.wait(WAIT_S), "the large request never reached the reranker"
        small = threading.Thread(target=post, args=("small", ["Paris is the capital of France."]))
        small.start()
        wait_for(lambda: app.state.turns.waiting == 1, "the small request queued for its turn")
        gated.gate.set()
        small.join(WAIT_S)
        large.join(WAIT_S)
    from rerank_export.serve import CHUNK_PAIRS

    assert gated.chunks == [CHUNK_PAIRS, 1, CHUNK_PAIRS, CHUNK_PAIRS], f"chunks in scoring order: {gated.chunks}"
    assert done == ["small", "large"]


def test_chunks_are_cut_by_pairs_and_by_tokens():
    from rerank_export.serve import chunk_bounds

    assert chunk_bounds([10] * 5, max_pairs=2, max_tokens=100) == [range(2), range(2, 4), range(4, 5)]
    assert chunk_bounds([60, 50, 10, 500, 1], max_pairs=16, max_tokens=100) == \
        [range(1), range(1, 3), range(3, 4), range(4, 5)]
    assert chunk_bounds([], max_pairs=2, max_tokens=100) == []


def test_scores_do_not_depend_on_the_chunks(reranker):
    """Cutting a request into chunks changes no score: each pair's score is its own."""
    import threading as th

    from rerank_export.serve import Limits, Options, score_chunks

    pairs = [("capital of France?", d) for d in DOCS * 12]  # 36 pairs: three chunks of at most 16
    chunked, _, _ = score_chunks(reranker, pairs, Options(), Limits(), th.Event())
    whole = reranker.score(pairs)
    assert max(abs(a - b) for a, b in zip(chunked, whole)) <= 1e-5


class CountingReranker:
    """The real reranker; encode records each document it is asked to tokenize."""

    def __init__(self, reranker) -> None:
        self.reranker, self.documents = reranker, []

    def __getattr__(self, name):
        return getattr(self.reranker, name)

    def encode(self, query, document, instruction=None, document_tokens=None):
        self.documents.append(document)
        return self.reranker.encode(query, document, instruction, document_tokens)


def test_a_document_is_tokenized_once_and_scores_as_the_library_scores_its_cut(reranker, qwen_tokenizer):
    """max_tokens_per_doc cuts a document's own token ids: each pair is encoded once (the query's template once
    more, to size truncate_prompt_tokens), and scores bit for bit as the library scores the cut text."""
    import threading as th

    from rerank_export.serve import Limits, Options, score_chunks

    counting, query = CountingReranker(reranker), "capital of France?"
    docs = [PROSE * 3, "Paris is the capital of France.", "The Eiffel Tower"]
    options = Options(max_tokens_per_doc=5, truncate_prompt_tokens=10**4)
    scores, tokens, truncated = score_chunks(counting, [(query, d) for d in docs], options, Limits(), th.Event())
    assert counting.documents == ["", *docs]
    cut = [qwen_tokenizer.decode(qwen_tokenizer(d, add_special_tokens=False)["input_ids"][:5]) for d in docs]
    assert scores == reranker.score([(query, c) for c in cut])
    assert truncated == [0, 1] and tokens == sum(len(reranker.encode(query, c).input_ids) for c in cut)


def create_app_for(reranker, **limits):
    from rerank_export.serve import Limits, create_app

    return create_app(reranker, "tiny-reranker", limits=Limits(**limits))


class DeadlineServer(ServerThread):
    """ServerThread with the protocol `rerank-export serve` runs (read deadlines), not uvicorn's default."""

    def __init__(self, app, read_timeout: float) -> None:
        import uvicorn

        from rerank_export.serve import Limits, server_config

        super().__init__(app)
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, Limits(read_timeout=read_timeout),
                                                   log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)


READ_TIMEOUT_S = 0.5


@pytest.fixture
def slow_server(reranker):
    with DeadlineServer(create_app_for(reranker, read_timeout=READ_TIMEOUT_S), READ_TIMEOUT_S) as base:
        yield base, int(base.rsplit(":", 1)[1])


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def still_serving(base: str) -> None:
    r = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=WAIT_S)
    assert r.status_code == 200, r.text


HALF_SENT = {
    "nothing": b"",
    "half a request line": b"POST /v1/rer",
    "headers without their blank line": b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applica",
}


@pytest.mark.parametrize("sent", HALF_SENT.values(), ids=HALF_SENT.keys())
def test_a_connection_without_complete_headers_is_closed(slow_server, sent):
    base, port = slow_server
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(sent)
        received = read_until_closed(sock)
    if sent:
        assert received.startswith(b"HTTP/1.1 408 "), received[:200]
        assert b"--read-timeout" in received
    still_serving(base)


def test_a_body_that_stops_arriving_gets_a_408_and_the_connection_closes(slow_server):
    base, port = slow_server
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"query\": \"q\", ")
        received = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower(), received[:300]
    assert b"--read-timeout" in body
    still_serving(base)


def test_a_refused_request_whose_body_keeps_coming_is_closed(slow_server):
    """Answered (415) without its body being read: the rest of the body may not hold the connection."""
    base, port = slow_server
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 100\r\n\r\nabc")
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 415 "), received[:200]
    still_serving(base)


def test_a_kept_alive_connection_is_closed_when_its_next_request_stalls(slow_server):
    base, port = slow_server
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"}" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        sock.sendall(b"GET /hea")  # the next request, half sent: it stops the keep-alive timer
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    still_serving(base)


def test_serve_has_a_read_timeout_flag():
    from rerank_export.cli import build_parser

    args = build_parser().parse_args(["serve", "artifacts", "--read-timeout", "2.5"])
    assert args.read_timeout == 2.5


PROSE = "Paris is the capital of France, and the Seine runs through it past the Louvre. "


def test_a_huge_document_is_cut_to_the_byte_cap_before_tokenizing_with_the_same_score(reranker):
    from rerank_export.serve import text_cap

    cap = text_cap(reranker.max_length)
    huge = PROSE * (2 * 2**20 // len(PROSE))  # 2 MiB; 256 tokens of it take about 1.3 KiB
    with serve(reranker) as base:
        answers = [httpx.post(f"{base}/v1/rerank", json={"query": "capital?", "documents": [doc]},
                              timeout=WAIT_S).json() for doc in (huge, huge[:cap // 2])]
    assert answers[0]["results"][0]["relevance_score"] == answers[1]["results"][0]["relevance_score"]
    assert answers[0]["usage"]["truncated_documents"] == [0] == answers[1]["usage"]["truncated_documents"]


def test_the_byte_caps_refuse_a_long_query_and_a_request_over_its_bytes_with_a_413(reranker):
    from rerank_export.serve import BYTES_PER_TOKEN, text_cap

    cap = text_cap(reranker.max_length)
    with serve(reranker, max_request_tokens=1000) as base:
        r = httpx.post(f"{base}/v1/rerank", json={"query": "q" * (cap + 1), "documents": ["a"]}, timeout=WAIT_S)
        assert_error(r, 413, f"cap of {cap} bytes per text", "query")
        body = {"query": "q", "documents": [PROSE * 60] * 5}  # 5 documents cut to `cap` bytes each
        assert_error(httpx.post(f"{base}/v1/rerank", json=body, timeout=WAIT_S), 413,
                     f"cap of {1000 * BYTES_PER_TOKEN} bytes of text per request", "documents")
        pairs = {"pairs": [["q", PROSE * 60]] * 5}
        assert_error(httpx.post(f"{base}/score", json=pairs, timeout=WAIT_S), 413, "--max-request-tokens")


def test_cut_utf8_keeps_whole_characters():
    from rerank_export.serve import cut_utf8

    text = "é" * 10  # 2 bytes each
    assert cut_utf8(text, 5) == "éé" and cut_utf8(text, 40) is text and cut_utf8("abc", 2) == "ab"


def test_tokenizing_stops_between_documents_once_cancelled(reranker):
    import threading as th

    from rerank_export.serve import Cancelled, Options
    from rerank_export.serve.tokens import encode_pairs

    cancel = th.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        encode_pairs(reranker, [("q", "a document")] * 3, Options(), 10**6, cancel)
