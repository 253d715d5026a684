"""The real HTTP server on 127.0.0.1 over a verified tiny artifact: shapes, validation, auth, keep-serving."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.needs_fixtures

SAME_ARTIFACT_TOL = 1e-5
MAX_DOCUMENTS = 20
MAX_BODY = 4096
API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn in a thread: the same server `rerank-export serve` runs, stoppable from the test."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started, "server did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def verified_root(verified_artifacts):
    return verified_artifacts


@pytest.fixture(scope="module")
def reranker(verified_root):
    import rerank_export

    return rerank_export.load(verified_root, device="cpu", max_length=256)


@pytest.fixture(scope="module")
def url(reranker):
    from rerank_export.serve import Limits, create_app

    with ServerThread(create_app(reranker, "tiny-reranker", limits=Limits(MAX_DOCUMENTS, MAX_BODY))) as base:
        yield base


@pytest.fixture(scope="module")
def roomy_url(reranker):
    """A body cap large enough for the hostile bodies to reach the JSON parser."""
    from rerank_export.serve import Limits, create_app

    with ServerThread(create_app(reranker, "tiny-reranker", limits=Limits(MAX_DOCUMENTS, 2**20))) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_url(reranker):
    from rerank_export.serve import create_app

    with ServerThread(create_app(reranker, "tiny-reranker", api_key=API_KEY)) as base:
        yield base


DOCS = ["Paris is the capital of France.", "Bananas are yellow.", {"text": "The Eiffel Tower is in Paris."}]


def test_rerank_shape_and_scores_match_the_library(url, reranker, source):
    from rerank_export.reference import ReferenceBackend
    from rerank_export.scoring import score_pairs

    body = {"model": "tiny-reranker", "query": "capital of France?", "documents": DOCS}
    r = httpx.post(f"{url}/v1/rerank", json=body, timeout=30)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["id"].startswith("rerank-") and data["model"] == "tiny-reranker"
    assert data["usage"]["total_tokens"] > 0 and data["usage"]["truncated_documents"] == []
    assert data["usage"]["prompt_tokens"] == data["usage"]["total_tokens"]  # vLLM's UsageInfo requires it
    texts = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris."]
    reference = score_pairs(ReferenceBackend(source), source.contract, [("capital of France?", t) for t in texts])
    got = {x["index"]: x["relevance_score"] for x in data["results"]}
    assert np.allclose([got[i] for i in range(3)], reference.scores, atol=SAME_ARTIFACT_TOL)
    scores = [x["relevance_score"] for x in data["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(x["document"] == {"text": texts[x["index"]]} for x in data["results"])


def test_rerank_alias_top_n_and_no_documents(url):
    body = {"query": "capital of France?", "documents": DOCS, "top_n": 2, "return_documents": False}
    data = httpx.post(f"{url}/rerank", json=body, timeout=30).json()
    # vLLM's RerankResult requires `document`: its text is null when not asked for
    assert len(data["results"]) == 2 and all(x["document"] == {"text": None} for x in data["results"])
    clamped = httpx.post(f"{url}/rerank", json={**body, "top_n": 50}, timeout=30).json()
    assert len(clamped["results"]) == 3  # above the document count: all of them, as vLLM and Cohere do
    everything = httpx.post(f"{url}/rerank", json={**body, "top_n": 0}, timeout=30).json()
    assert len(everything["results"]) == 3  # vLLM: 0 means all


def test_instruction_changes_the_prompt(url, reranker):
    body = {"query": "capital of France?", "documents": DOCS[:2], "instruction": "Find fruit facts"}
    data = httpx.post(f"{url}/v1/rerank", json=body, timeout=30).json()
    expected = reranker.score([("capital of France?", d) for d in DOCS[:2]], "Find fruit facts")
    got = {x["index"]: x["relevance_score"] for x in data["results"]}
    assert np.allclose([got[0], got[1]], expected, atol=SAME_ARTIFACT_TOL)
    plain = reranker.score([("capital of France?", d) for d in DOCS[:2]])  # the default instruction
    assert not np.allclose(plain, expected, atol=SAME_ARTIFACT_TOL), "the instruction changed nothing"


def test_truncation_is_reported_in_usage(url):
    body = {"query": "capital?", "documents": ["short", "long " * 400]}
    data = httpx.post(f"{url}/v1/rerank", json=body, timeout=30).json()
    assert data["usage"]["truncated_documents"] == [1]


def test_score_pairs_and_vllm_form(url, reranker):
    pairs = [["capital of France?", "Paris"], ["fruit?", "Bananas are yellow."]]
    data = httpx.post(f"{url}/score", json={"pairs": pairs}, timeout=30).json()
    assert [x["index"] for x in data["data"]] == [0, 1]
    assert np.allclose([x["score"] for x in data["data"]], reranker.score([tuple(p) for p in pairs]),
                       atol=SAME_ARTIFACT_TOL)
    vllm_form = httpx.post(f"{url}/score", json={"text_1": "capital of France?", "text_2": ["Paris", "Rome"]},
                           timeout=30).json()
    assert len(vllm_form["data"]) == 2 and vllm_form["usage"]["total_tokens"] > 0


def test_health_and_models(url):
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["format"] == "baseline-fp32"
    models = httpx.get(f"{url}/v1/models").json()
    assert models["data"][0]["id"] == "tiny-reranker"
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<textarea" in page.text


BAD_REQUESTS = [
    ("malformed JSON", b'{"query": "q", "documents": [', 400, "not valid JSON"),
    ("not an object", b'["q"]', 400, "JSON object"),
    ("empty query", {"query": "  ", "documents": ["a"]}, 400, "'query' is empty"),
    ("missing query", {"documents": ["a"]}, 400, "'query' must be a string"),
    ("zero documents", {"query": "q", "documents": []}, 400, "'documents' is empty"),
    ("documents not a list", {"query": "q", "documents": 5}, 400, "must be a list"),
    ("non-string document", {"query": "q", "documents": ["a", 3]}, 400, "documents[1]"),
    ("dict without text", {"query": "q", "documents": [{"body": "a"}]}, 400, "documents[0]"),
    ("too many documents", {"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, 413, "cap of 20"),
    ("another model", {"model": "gpt-4", "query": "q", "documents": ["a"]}, 404, 'model "gpt-4" is not served'),
    ("top_n negative", {"query": "q", "documents": ["a"], "top_n": -3}, 400, "'top_n'"),
    ("top_n not int", {"query": "q", "documents": ["a"], "top_n": "2"}, 400, "'top_n'"),
    ("top_n bool", {"query": "q", "documents": ["a"], "top_n": True}, 400, "'top_n'"),
    ("body over cap", {"query": "q", "documents": ["x" * (MAX_BODY + 10)]}, 413, "cap of 4096 bytes"),
    ("instruction not str", {"query": "q", "documents": ["a"], "instruction": 5}, 400, "'instruction'"),
]


@pytest.mark.parametrize("what,body,status,message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(url, what, body, status, message):
    r = post(url, "/v1/rerank", body)
    assert_error(r, status, message)
    ok = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
    assert ok.status_code == 200


def post(url: str, path: str, body, headers: dict | None = None) -> httpx.Response:
    """POST a body as given: bytes verbatim, anything else as ASCII JSON (lone surrogates become \\ud800)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, timeout=30,
                      headers={"Content-Type": "application/json", **(headers or {})})


def assert_error(r: httpx.Response, status: int, message: str = "", param: str | None = None) -> None:
    """The one documented error shape, with the expected status, message part and field."""
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert message in error["message"], error
    if param is not None:
        assert error["param"] == param, error


def nested(depth: int) -> bytes:
    return b'{"query": "q", "documents": ["a"], "x": ' + b"[" * depth + b"]" * depth + b"}"


LONE = "\ud800"
HOSTILE = [  # issue 12: each of these was a plain-text 500 with a traceback in the log
    ("nested 5000 deep", "/v1/rerank", nested(5000), "nests deeper", None),
    ("nested 100 deep", "/v1/rerank", nested(100), "nests deeper", None),
    ("5000-digit top_n", "/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": ' + b"7" * 5000 + b"}",
     "'top_n' must be a positive integer (0: all), got 7777", "top_n"),
    ("5000-digit negative top_n", "/v1/rerank",
     b'{"query": "q", "documents": ["a"], "top_n": -' + b"7" * 5000 + b"}", "'top_n'", "top_n"),
    ("top_n 1e999", "/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": 1e999}', "'top_n'", "top_n"),
    ("NaN", "/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": NaN}', "NaN", None),
    ("surrogate in query", "/v1/rerank", {"query": f"q{LONE}", "documents": ["a"]}, "surrogate", "query"),
    ("surrogate in document", "/v1/rerank", {"query": "q", "documents": ["a", LONE]}, "surrogate",
     "documents[1]"),
    ("surrogate in {text}", "/v1/rerank", {"query": "q", "documents": [{"text": LONE}]}, "surrogate",
     "documents[0]"),
    ("surrogate in instruction", "/v1/rerank", {"query": "q", "documents": ["a"], "instruction": LONE},
     "surrogate", "instruction"),
    ("surrogate in model", "/v1/rerank", {"model": LONE, "query": "q", "documents": ["a"]}, "surrogate", "model"),
    ("surrogate in a pair's query", "/score", {"pairs": [["q", "a"], [LONE, "b"]]}, "surrogate", "pairs[1][0]"),
    ("surrogate in a pair's document", "/score", {"pairs": [["q", "\udfff"]]}, "surrogate", "pairs[0]"),
    ("surrogate in text_1", "/score", {"text_1": LONE, "text_2": ["a"]}, "surrogate", "text_1[0]"),
    ("surrogate in text_2", "/score", {"text_1": "q", "text_2": [LONE]}, "surrogate", "text_2[0]"),
    ("bytes not UTF-8", "/v1/rerank", b'{"query": "\xff", "documents": ["a"]}', "not valid JSON", None),
    # issue 26: a lone surrogate in a key was a 500 (the refusal naming the key could not be encoded)
    *[(f"surrogate in a key on {path}", path, {LONE: 1}, "a key of the body holds a lone UTF-16 surrogate", None)
      for path in ["/v1/rerank", "/v2/rerank", "/rerank", "/score"]],
    ("surrogate in a document's key", "/v1/rerank", {"query": "q", "documents": ["a", {"text": "b", LONE: 1}]},
     "a key of 'documents[1]'", "documents[1]"),
    ("surrogate in a content part's key", "/score",
     {"queries": "q", "documents": [{"content": [{"type": "text", "text": "a", LONE: 1}]}]},
     "a key of 'documents[0].content[0]'", "documents[0].content[0]"),
    ("surrogate in a template kwarg", "/v1/rerank",
     {"query": "q", "documents": ["a"], "chat_template_kwargs": {LONE: 1}}, "surrogate", "chat_template_kwargs"),
]


@pytest.mark.parametrize("what,path,body,message,param", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_bodies_get_a_400_naming_the_field(roomy_url, what, path, body, message, param):
    assert_error(post(roomy_url, path, body), 400, message, param)
    assert httpx.get(f"{roomy_url}/health", timeout=30).status_code == 200


PART = {"type": "text", "text": "a"}
UNKNOWN_KEYS = [  # issue 26: keys nobody reads are refused at every level, named by their path
    ("top level", "/v1/rerank", {"query": "q", "documents": ["a"], "bogus": 1}, "bogus"),
    ("a content part", "/v1/rerank", {"query": "q", "documents": [{"content": [{**PART, "bogus": 1}]}]},
     "documents[0].content[0].bogus"),
    ("beside content", "/v2/rerank", {"query": "q", "documents": [{"content": [PART], "bogus": 1}]},
     "documents[0].bogus"),
    ("beside text", "/rerank", {"query": "q", "documents": [{"text": "a", "bogus": 1}]}, "documents[0].bogus"),
    ("a score document's part", "/score", {"queries": "q", "documents": [{"content": [PART, {**PART, "x": 1}]}]},
     "documents[0].content[1].x"),
    ("a score query's part", "/v1/score", {"queries": [{"content": [{**PART, "bogus": 1}]}], "documents": ["a"]},
     "queries[0].content[0].bogus"),
    ("a pair's document", "/score", {"pairs": [["q", {"text": "a", "bogus": 1}]]}, "pairs[0].bogus"),
    ("template kwargs", "/v1/rerank", {"query": "q", "documents": ["a"],
                                       "chat_template_kwargs": {"instruction": "x", "bogus": 1}},
     "chat_template_kwargs.bogus"),
    ("relevant_spans", "/v2/rerank", {"query": "q", "documents": ["a"],
                                      "relevant_spans": {"mode": "disabled", "bogus": 1}}, "relevant_spans.bogus"),
]


@pytest.mark.parametrize("what,path,body,field", UNKNOWN_KEYS, ids=[u[0] for u in UNKNOWN_KEYS])
def test_unknown_keys_are_refused_at_every_level_by_name(roomy_url, what, path, body, field):
    assert_error(post(roomy_url, path, body), 400, f"'{field}' is not a field", field)


@pytest.mark.parametrize("path,query", [("/v1/rerank", "query"), ("/score", "queries")])
def test_a_key_with_control_characters_is_named_on_one_line(roomy_url, path, query):
    r = post(roomy_url, path, {query: "q", "documents": [{"text": "a", "line\nbreak\u0000": 1}]})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "\n" not in message and "\x00" not in message, message
    assert "line\\nbreak\\x00" in message, message


def test_non_text_parts_are_refused_by_name(roomy_url):
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    body = {"query": "q", "documents": [{"content": [{"type": "text", "text": "a"}, image]}]}
    assert_error(post(roomy_url, "/v1/rerank", body), 400, "reads text parts only", "documents[0].content[1].type")
    missing = {"query": "q", "documents": [{"content": [{"text": "a"}]}]}
    assert_error(post(roomy_url, "/v1/rerank", missing), 400, "must be \"text\"", "documents[0].content[0].type")


def test_body_over_cap_without_content_length(url):
    def chunks():
        yield b'{"query": "q", "documents": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    r = httpx.post(f"{url}/v1/rerank", content=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413


def test_bad_score_requests(url):
    r = httpx.post(f"{url}/score", json={"pairs": [["q"]]}, timeout=30)
    assert r.status_code == 400 and "[query, document]" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/score", json={"text_1": ["a", "b"], "text_2": ["x"]}, timeout=30)
    assert r.status_code == 400 and "'text_1' has 2 items" in r.json()["error"]["message"]


def test_api_key(keyed_url):
    body = {"query": "q", "documents": ["a"]}
    assert httpx.post(f"{keyed_url}/v1/rerank", json=body).status_code == 401
    wrong = httpx.post(f"{keyed_url}/v1/rerank", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert httpx.get(f"{keyed_url}/v1/models").status_code == 401
    right = httpx.post(f"{keyed_url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert right.status_code == 200
    assert httpx.get(f"{keyed_url}/health").status_code == 200  # probes need no key


def test_unknown_routes_and_methods_get_our_error_shape(url):
    assert_error(httpx.post(f"{url}/v2/nothing", json={}), 404, "no route POST /v2/nothing")
    assert_error(httpx.get(f"{url}/nothing"), 404, "POST /v1/rerank")
    wrong = httpx.get(f"{url}/v1/rerank")
    assert_error(wrong, 405, "GET /v1/rerank is not allowed; use POST")
    assert wrong.headers["allow"] == "POST"
    health = httpx.delete(f"{url}/health")
    assert_error(health, 405, "DELETE /health is not allowed; use ")
    assert set(health.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_head_on_the_page_and_health(url):
    for path in ["/", "/health"]:
        r = httpx.head(f"{url}{path}")
        assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_json_endpoints_require_application_json(url, content_type):
    body = json.dumps({"query": "q", "documents": ["a"]}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path in ["/v1/rerank", "/score"]:
        assert_error(httpx.post(f"{url}{path}", content=body, headers=headers), 415, "application/json",
                     "Content-Type")
    ok = httpx.post(f"{url}/v1/rerank", content=body, headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200


def test_default_allowed_hosts():
    from rerank_export.serve import default_allowed_hosts

    assert default_allowed_hosts("127.0.0.1") == ["127.0.0.1", "::1", "localhost"]
    assert default_allowed_hosts("10.1.2.3") == ["10.1.2.3", "127.0.0.1", "::1", "localhost"]
    assert default_allowed_hosts("0.0.0.0") == ["*"]


def test_other_host_headers_are_refused(reranker):
    from rerank_export.serve import create_app, default_allowed_hosts

    app = create_app(reranker, "tiny-reranker", allowed_hosts=[*default_allowed_hosts("127.0.0.1"), "rerank.lan"])
    with ServerThread(app) as base:
        port = base.rsplit(":", 1)[1]
        for host in [f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "rerank.lan"]:
            assert httpx.get(f"{base}/health", headers={"Host": host}).status_code == 200, host
        for host in [f"evil.example:{port}", "127.0.0.1.evil.example", "rerank.lan.evil", ""]:
            r = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"Host": host})
            assert_error(r, 400, "--allowed-hosts", "Host")
        assert httpx.get(f"{base}/health").status_code == 200
