"""vLLM's own request bodies against our server (issue 26 item 7): each body is built by vLLM's pydantic request
classes, defaults included (`RerankRequest(...).model_dump()`), in vLLM's environment, sent from there to our
server on 127.0.0.1, and our answer validated there by vLLM's RerankResponse / ScoreResponse. Back here, the
scores are held against our library's.

Needs a vLLM interpreter in $RERANK_EXPORT_VLLM_PYTHON (scripts/vllm-venv.sh); it only imports vLLM's protocol
classes, no engine starts.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from rerank_export.vllm.command import VLLM_PYTHON_ENV

from .test_serve import ServerThread

VLLM_PY = os.environ.get(VLLM_PYTHON_ENV)
pytestmark = [pytest.mark.vllm, pytest.mark.needs_fixtures,
              pytest.mark.skipif(not VLLM_PY, reason=f"${VLLM_PYTHON_ENV} names no vLLM interpreter")]

SAME_ARTIFACT_TOL = 1e-5
MODEL = "tiny-reranker"
QUERY = "What is the capital of France?"
DOCS = ["The capital of France is Paris", "Reranking is fun!", "vLLM is an open-source framework for fast AI serving"]
INSTRUCTION = "Find fruit facts"
PARTS = [{"content": [{"type": "text", "text": d}]} for d in DOCS]
BOOKKEEPING = {"user": "user-26", "cache_salt": "a-salt", "request_id": "req-26", "priority": 0,
               "max_tokens_per_doc": 0, "max_tokens_per_query": 0, "truncate_prompt_tokens": -1}

# name: (route, vLLM request class, its arguments, fields added to its model_dump(), the scored documents)
CASES = {
    "rerank defaults": ("/v1/rerank", "RerankRequest", {"query": QUERY, "documents": DOCS}, {}, DOCS),
    "rerank on /v2/rerank": ("/v2/rerank", "RerankRequest", {"query": QUERY, "documents": DOCS}, {}, DOCS),
    "rerank on /rerank": ("/rerank", "RerankRequest", {"query": QUERY, "documents": DOCS}, {}, DOCS),
    "rerank one bare document": ("/v1/rerank", "RerankRequest", {"query": QUERY, "documents": DOCS[0]}, {},
                                 DOCS[:1]),
    "rerank content parts": ("/v1/rerank", "RerankRequest", {"query": QUERY, "documents": PARTS}, {}, DOCS),
    "rerank every field": ("/v1/rerank", "RerankRequest",
                           {"query": QUERY, "documents": DOCS, "model": MODEL, "top_n": 2,
                            "instruction": INSTRUCTION, **BOOKKEEPING}, {}, DOCS),
    "rerank template kwargs": ("/v1/rerank", "RerankRequest",
                               {"query": QUERY, "documents": DOCS,
                                "chat_template_kwargs": {"instruction": INSTRUCTION}}, {}, DOCS),
    "rerank return_documents false": ("/v1/rerank", "RerankRequest", {"query": QUERY, "documents": DOCS},
                                      {"return_documents": False}, DOCS),
    "score queries documents": ("/score", "ScoreQueriesDocumentsRequest", {"queries": QUERY, "documents": DOCS},
                                {}, DOCS),
    "score queries items": ("/v1/score", "ScoreQueriesItemsRequest", {"queries": [QUERY], "items": DOCS}, {},
                            DOCS),
    "score data": ("/score", "ScoreDataRequest", {"data_1": QUERY, "data_2": PARTS}, {}, DOCS),
    "score text": ("/score", "ScoreTextRequest", {"text_1": QUERY, "text_2": DOCS, **BOOKKEEPING}, {}, DOCS),
    "score text one bare document": ("/score", "ScoreTextRequest", {"text_1": QUERY, "text_2": DOCS[1]}, {},
                                     DOCS[1:2]),
}

# Runs in vLLM's environment: reads {"url", "cases"} on stdin, prints {name: {status, answer, invalid}}.
CLIENT = """
import json, sys, urllib.error, urllib.request
try:
    from vllm.entrypoints.pooling.scoring import protocol
except ImportError:  # vLLM before the pooling package
    from vllm.entrypoints.openai import protocol

given, report = json.load(sys.stdin), {}
for name, (route, cls, kwargs, extra) in given["cases"].items():
    body = {**getattr(protocol, cls)(**kwargs).model_dump(mode="json"), **extra}
    request = urllib.request.Request(given["url"] + route, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, answer = response.status, json.load(response)
    except urllib.error.HTTPError as error:
        status, answer = error.code, json.load(error)
    model = protocol.RerankResponse if "rerank" in route else protocol.ScoreResponse
    try:
        model.model_validate(answer)
        invalid = None
    except Exception as exc:
        invalid = str(exc)
    report[name] = {"body": body, "status": status, "answer": answer, "invalid": invalid}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def reranker(verified_artifacts):
    import rerank_export

    return rerank_export.load(verified_artifacts, device="cpu", max_length=512)


@pytest.fixture(scope="module")
def report(reranker):
    """Every case, sent once by vLLM's interpreter to our server (one vLLM import for all)."""
    from rerank_export.serve import create_app

    with ServerThread(create_app(reranker, MODEL)) as url:
        cases = {name: case[:4] for name, case in CASES.items()}
        done = subprocess.run([str(VLLM_PY), "-c", CLIENT], input=json.dumps({"url": url, "cases": cases}),
                              capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def scores_by_index(answer: dict) -> list[float]:
    if "results" in answer:
        return [r["relevance_score"] for r in sorted(answer["results"], key=lambda r: r["index"])]
    return [d["score"] for d in sorted(answer["data"], key=lambda d: d["index"])]


@pytest.mark.parametrize("name", list(CASES))
def test_vllm_bodies_are_answered_as_vllm_expects(report, reranker, name):
    got = report[name]
    assert got["status"] == 200, (got["body"], got["answer"])
    assert got["invalid"] is None, f"vLLM's response model refuses our answer: {got['invalid']}"
    _, _, kwargs, _, docs = CASES[name]
    instruction = kwargs.get("instruction") or (kwargs.get("chat_template_kwargs") or {}).get("instruction")
    expected = reranker.score([(QUERY, d) for d in docs], instruction)
    answer = got["answer"]
    if kwargs.get("top_n"):
        assert len(answer["results"]) == kwargs["top_n"]
        ranked = sorted(range(len(docs)), key=lambda i: -expected[i])[:kwargs["top_n"]]
        assert [r["index"] for r in answer["results"]] == ranked
        expected = [expected[i] for i in sorted(ranked)]
    assert np.allclose(scores_by_index(answer), expected, atol=SAME_ARTIFACT_TOL)
    assert answer["id"].endswith(f"-{got['body']['request_id']}")  # vLLM's default_factory id, echoed


def test_the_bodies_carry_vllm_defaults(report):
    """The point of the test: vLLM's defaults really were sent (and answered 200 above)."""
    body = report["rerank defaults"]["body"]
    assert body["max_tokens_per_doc"] == 0 and body["request_id"] and "cache_salt" in body and "user" in body
    documents = report["rerank return_documents false"]["answer"]["results"]
    assert all(r["document"] == {"text": None} for r in documents)
