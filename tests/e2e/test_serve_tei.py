"""TEI's client against our server (issue 26 item 7): the `tei-client` package (dev extra) reads GET /info
before its first rerank, then POSTs TEI's /rerank body; both answer in TEI's shapes."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from .test_serve import ServerThread

pytestmark = pytest.mark.needs_fixtures

SAME_ARTIFACT_TOL = 1e-5
MAX_LENGTH = 256
MODEL = "tiny-reranker"
QUERY = "What is the capital of France?"
DOCS = ["The capital of France is Paris", "Reranking is fun!", "Bananas are yellow."]
# TEI's Info (router/src/lib.rs): every field it serializes, nullable ones included
TEI_INFO_FIELDS = {"model_id", "model_sha", "model_dtype", "model_type", "max_concurrent_requests",
                   "max_input_length", "max_batch_tokens", "max_batch_requests", "max_client_batch_size",
                   "auto_truncate", "tokenization_workers", "version", "sha", "docker_label"}


@pytest.fixture(scope="module")
def reranker(verified_artifacts):
    import rerank_export

    return rerank_export.load(verified_artifacts, device="cpu", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def url(reranker):
    from rerank_export.serve import create_app

    with ServerThread(create_app(reranker, MODEL)) as base:
        yield base


def test_info_has_tei_shape(url, reranker):
    info = httpx.get(f"{url}/info").json()
    assert set(info) == TEI_INFO_FIELDS
    assert info["model_id"] == MODEL and info["model_dtype"] == "float32"  # baseline-fp32, in TEI's words
    assert info["model_type"] == {"reranker": {"id2label": {"0": "relevance"}, "label2id": {"relevance": 0}}}
    assert info["max_input_length"] == reranker.max_length and info["auto_truncate"] is False
    assert all(isinstance(info[k], int) and info[k] > 0 for k in
               ["max_concurrent_requests", "max_batch_tokens", "max_batch_requests", "max_client_batch_size",
                "tokenization_workers"])


def test_tei_client_reads_info_then_reranks(url, reranker):
    from tei_client import HttpClient, ModelType

    client = HttpClient(url)
    assert client.health()  # tei-client's health is GET /info
    info = client.info()
    assert info.server_model_type == ModelType.Reranker and info.server_model_id == MODEL
    ranked = client.rerank(QUERY, DOCS, return_text=True).ranks
    scores = reranker.score([(QUERY, d) for d in DOCS])
    expected = sorted(range(len(DOCS)), key=lambda i: -scores[i])
    assert [r.index for r in ranked] == expected
    assert np.allclose([r.score for r in ranked], [scores[i] for i in expected], atol=SAME_ARTIFACT_TOL)
    assert [r.text for r in ranked] == [DOCS[i] for i in expected]
    long = "Paris is the capital and largest city of France. " * 60  # over MAX_LENGTH tokens
    cut = client.rerank(QUERY, [long], truncate=True).ranks
    assert len(cut) == 1 and cut[0].text is None
