"""Other tools load the artifacts as they are: transformers' chat template and sentence-transformers."""

from __future__ import annotations

import pytest

from rerank_export.contract import Contract

pytestmark = pytest.mark.needs_fixtures

QUERY = "What is green tea?"
DOCS = ["Green tea is a drink brewed from unoxidised tea leaves.", "Paris is the capital of France.",
        "tea " * 60, "Matcha is powdered green tea; it is whisked, not steeped."]


def test_artifact_chat_template_renders_the_contract_ids(verified_artifacts):
    from transformers import AutoTokenizer

    folder = verified_artifacts / "baseline-fp32"
    assert (folder / "chat_template.jinja").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    contract = Contract(tokenizer)
    for doc in DOCS:
        messages = [{"role": "system", "content": "Find tea facts"}, {"role": "query", "content": QUERY},
                    {"role": "document", "content": doc}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        assert ids == contract.encode(QUERY, doc, "Find tea facts").input_ids


def test_sentence_transformers_cross_encoder_scores_like_the_runtime(verified_artifacts):
    """CrossEncoder(artifact) maps each pair to query/document messages and applies a sigmoid."""
    from sentence_transformers import CrossEncoder

    import rerank_export

    folder = verified_artifacts / "baseline-fp32"
    expected = rerank_export.load(folder, device="cpu").score([(QUERY, d) for d in DOCS])
    scores = CrossEncoder(str(folder), device="cpu").predict([(QUERY, d) for d in DOCS])
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
