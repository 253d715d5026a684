"""The request contract (rerank_export/api.py) against the real server: the official cohere SDK (v1 Client and
ClientV2) calling it on 127.0.0.1; every field honoured or refused by name; truncation that really cuts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from .test_serve import ServerThread, assert_error

pytestmark = pytest.mark.needs_fixtures

SAME_ARTIFACT_TOL = 1e-5
MODEL = "tiny-reranker"
QUERY = "What is the capital of France?"
DOCS = ["The capital of France is Paris", "Reranking is fun!", "vLLM is an open-source framework for fast AI serving"]
LONG_DOC = "Paris is the capital and largest city of France. " * 20


@pytest.fixture(scope="module")
def reranker(verified_artifacts):
    import rerank_export

    return rerank_export.load(verified_artifacts, device="cpu", max_length=512)


@pytest.fixture(scope="module")
def url(reranker):
    from rerank_export.serve import create_app

    with ServerThread(create_app(reranker, MODEL)) as base:
        yield base


def expected_ranking(reranker, docs, instruction=None) -> list[tuple[int, float]]:
    scores = reranker.score([(QUERY, d) for d in docs], instruction)  # the library, not the server
    return sorted(enumerate(scores), key=lambda x: -x[1])


def assert_ranking(results, expected) -> None:
    assert [r.index for r in results] == [i for i, _ in expected]
    assert np.allclose([r.relevance_score for r in results], [s for _, s in expected], atol=SAME_ARTIFACT_TOL)


def test_cohere_client_v2(url, reranker):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=url)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCS, top_n=2)
    assert_ranking(response.results, expected_ranking(reranker, DOCS)[:2])


def test_cohere_client_v1(url, reranker):
    import cohere

    client = cohere.Client(api_key="unused", base_url=url)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCS, return_documents=True)
    assert_ranking(response.results, expected_ranking(reranker, DOCS))
    assert [r.document.text for r in response.results] == [DOCS[i] for i, _ in expected_ranking(reranker, DOCS)]


def test_cohere_max_tokens_per_doc_truncates_the_document(url, reranker, qwen_tokenizer):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=url)
    response = client.rerank(model=MODEL, query=QUERY, documents=[LONG_DOC], max_tokens_per_doc=5)
    cut = qwen_tokenizer.decode(qwen_tokenizer(LONG_DOC, add_special_tokens=False)["input_ids"][:5])
    assert np.isclose(response.results[0].relevance_score, reranker.score([(QUERY, cut)])[0], atol=SAME_ARTIFACT_TOL)
    assert not np.isclose(reranker.score([(QUERY, cut)])[0], reranker.score([(QUERY, LONG_DOC)])[0],
                          atol=SAME_ARTIFACT_TOL), "the cut made no difference: the test would prove nothing"


def test_cohere_sdk_sees_a_wrong_model_as_not_found(url):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=url)
    with pytest.raises(cohere.errors.NotFoundError):
        client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)


def test_truncate_prompt_tokens_cuts_only_the_document(url, reranker):
    full = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": [LONG_DOC]}).json()
    limit = full["usage"]["prompt_tokens"] - 40
    cut = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": [LONG_DOC],
                                               "truncate_prompt_tokens": limit}).json()
    assert cut["usage"]["prompt_tokens"] <= limit and cut["usage"]["truncated_documents"] == [0]
    assert cut["results"][0]["relevance_score"] != full["results"][0]["relevance_score"]
    too_small = httpx.post(f"{url}/score", json={"text_1": QUERY, "text_2": [LONG_DOC], "truncate_prompt_tokens": 5})
    assert_error(too_small, 400, "leaves no room for the document", "truncate_prompt_tokens")


def test_instruction_in_chat_template_kwargs(url, reranker):
    instruction = "Find fruit facts"
    expected = [s for _, s in sorted(expected_ranking(reranker, DOCS, instruction))]
    for body in [{"instruction": instruction}, {"chat_template_kwargs": {"instruction": instruction}},
                 {"instruction": instruction, "chat_template_kwargs": {"instruction": instruction}}]:
        data = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": DOCS, **body}).json()
        got = sorted((r["index"], r["relevance_score"]) for r in data["results"])
        assert np.allclose([s for _, s in got], expected, atol=SAME_ARTIFACT_TOL), body
    differ = {"instruction": "a", "chat_template_kwargs": {"instruction": "b"}}
    assert_error(httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS, **differ}), 400,
                 "differ", "instruction")


REFUSED = [  # fields clients send that this server does not implement: a 400 naming each, never a silent 200
    ("unknown field", "/v1/rerank", {"temperature": 0.5}, "temperature"),
    ("Cohere v1 rank_fields", "/v1/rerank", {"rank_fields": ["title"]}, "rank_fields"),
    ("Cohere v1 max_chunks_per_doc", "/v1/rerank", {"max_chunks_per_doc": 3}, "max_chunks_per_doc"),
    ("TEI raw_scores", "/rerank", {"raw_scores": True}, "raw_scores"),
    ("TEI texts on /v1/rerank", "/v1/rerank", {"texts": ["a"]}, "texts"),
    ("use_activation false", "/v1/rerank", {"use_activation": False}, "use_activation"),
    ("priority", "/v1/rerank", {"priority": 5}, "priority"),
    ("other template kwargs", "/v1/rerank", {"chat_template_kwargs": {"enable_thinking": True}},
     "chat_template_kwargs"),
    ("score's padding", "/score", {"padding": "max_length"}, "padding"),
    ("query truncation", "/score", {"max_tokens_per_query": 3}, "max_tokens_per_query"),
    ("a document with a title", "/v1/rerank", {"documents": [{"text": "a", "title": "b"}]}, "documents[0]"),
    ("an image part", "/v1/rerank", {"documents": [{"content": [{"type": "image_url", "image_url": "x"}]}]},
     "documents[0]"),
    ("top_n on /score", "/score", {"top_n": 1}, "top_n"),
    ("max_tokens_per_doc 0", "/v2/rerank", {"max_tokens_per_doc": 0}, "max_tokens_per_doc"),
]


@pytest.mark.parametrize("what,path,extra,field", REFUSED, ids=[r[0] for r in REFUSED])
def test_fields_not_honoured_are_refused_by_name(url, what, path, extra, field):
    base = {"query": QUERY, "documents": DOCS} if "rerank" in path else {"text_1": QUERY, "text_2": DOCS}
    assert_error(httpx.post(f"{url}{path}", json={**base, **extra}), 400, f"'{field}'", field)


def test_tei_rerank_with_texts(url, reranker):
    r = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    ranked = r.json()
    assert isinstance(ranked, list) and all(set(x) == {"index", "score", "text"} for x in ranked)
    expected = expected_ranking(reranker, DOCS)
    assert [x["index"] for x in ranked] == [i for i, _ in expected]
    assert np.allclose([x["score"] for x in ranked], [s for _, s in expected], atol=SAME_ARTIFACT_TOL)
    assert [x["text"] for x in ranked] == [DOCS[i] for i, _ in expected]
    plain = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert all("text" not in x for x in plain)


def test_tei_truncate_false_refuses_what_it_would_cut(url, reranker):
    too_long = "Paris is the capital and largest city of France. " * 60  # over the 512-token max length
    body = {"query": QUERY, "texts": ["short", too_long]}
    assert_error(httpx.post(f"{url}/rerank", json=body), 413, "texts[1] is longer", "texts")
    cut = httpx.post(f"{url}/rerank", json={**body, "truncate": True})
    assert cut.status_code == 200 and len(cut.json()) == 2
    assert_error(httpx.post(f"{url}/rerank", json={**body, "raw_scores": True}), 400, "'raw_scores'", "raw_scores")
    assert_error(httpx.post(f"{url}/rerank", json={**body, "top_n": 1}), 400, "'top_n'", "top_n")


def test_harmless_defaults_are_accepted(url):
    body = {"query": QUERY, "documents": DOCS, "use_activation": True, "priority": 0, "raw_scores": False,
            "truncation_direction": "right", "truncate_prompt_tokens": -1, "model": MODEL}
    assert httpx.post(f"{url}/v1/rerank", json=body).status_code == 200


def test_models_lists_openai_fields(url):
    card = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert card["id"] == MODEL and card["object"] == "model" and card["owned_by"]
    assert isinstance(card["created"], int) and card["created"] > 0


SCORE_SHAPES = [{"text_1": QUERY, "text_2": DOCS}, {"text_1": [QUERY], "text_2": DOCS},
                {"queries": QUERY, "documents": DOCS}, {"queries": [QUERY], "items": DOCS},
                {"data_1": QUERY, "data_2": DOCS}, {"pairs": [[QUERY, d] for d in DOCS]},
                {"queries": QUERY, "documents": [{"content": [{"type": "text", "text": d}]} for d in DOCS]}]


@pytest.mark.parametrize("body", SCORE_SHAPES, ids=[",".join(b) for b in SCORE_SHAPES])
def test_vllm_score_shapes(url, reranker, body):
    r = httpx.post(f"{url}/v1/score", json=body)
    assert r.status_code == 200, r.text
    expected = reranker.score([(QUERY, d) for d in DOCS])
    assert np.allclose([x["score"] for x in r.json()["data"]], expected, atol=SAME_ARTIFACT_TOL)


VLLM_PYTHON = Path(os.environ.get("RERANK_EXPORT_VLLM_PYTHON",
                                  Path.home() / ".cache/rerank-export/venv-vllm/bin/python"))
VALIDATE = """
import json, sys
try:
    from vllm.entrypoints.pooling.scoring.protocol import RerankResponse, ScoreResponse
except ImportError:
    from vllm.entrypoints.openai.protocol import RerankResponse, ScoreResponse
rerank, score = json.load(sys.stdin)
RerankResponse.model_validate(rerank)
ScoreResponse.model_validate(score)
print("valid")
"""


@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=f"{VLLM_PYTHON} not found (scripts/vllm-venv.sh)")
def test_vllm_own_response_models_accept_our_answers(url):
    rerank = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()
    score = httpx.post(f"{url}/score", json={"queries": QUERY, "documents": DOCS}).json()
    done = subprocess.run([str(VLLM_PYTHON), "-c", VALIDATE], input=json.dumps([rerank, score]),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("valid"), done.stderr[-2000:]
