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


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["baseline-fp32", "baseline-bf16"])
def test_transformers_and_cross_encoder_score_any_padding_like_the_reference(baseline_artifacts, source, name,
                                                                             side):
    """transformers' AutoModelForSequenceClassification and sentence-transformers' CrossEncoder, padding
    left or right, on one mixed-length batch of the built-in pairs: within the format's limits against the
    reference, and each pair as alone within its alone-vs-batch limit."""
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerank_export.contract import prompt_text
    from rerank_export.evalsets import EvalSet, builtin_eval_set
    from rerank_export.formats import get_format
    from rerank_export.parity import compare, score_set
    from rerank_export.reference import ReferenceBackend

    folder = baseline_artifacts / name
    limits = get_format(name).thresholds
    evalset = EvalSet("builtin", tuple(g for g in builtin_eval_set(False).groups if g.instruction is None))
    pairs = [(g.query, d) for g in evalset.groups for d in g.documents]
    reference = score_set(ReferenceBackend(source), source, evalset)

    tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side=side)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()

    @torch.no_grad()
    def transformers_scores(batch: list[tuple[str, str]]) -> np.ndarray:
        inputs = tokenizer([prompt_text(q, d) for q, d in batch], padding=True, return_tensors="pt")
        return torch.sigmoid(model(**inputs).logits[:, 0].float()).numpy()

    cross_encoder = CrossEncoder(str(folder), device="cpu")
    cross_encoder.tokenizer.padding_side = side
    scorers = {"transformers": transformers_scores,
               "sentence-transformers": lambda batch: np.asarray(cross_encoder.predict(batch, batch_size=64))}
    for label, scorer in scorers.items():
        together = np.asarray(scorer(pairs), dtype=np.float64)
        alone = np.concatenate([scorer([p]) for p in pairs]).astype(np.float64)
        report = compare(reference, together, evalset, limits, name, float(np.abs(together - alone).max()))
        assert report.passed, (label, side, report.breaches)
