"""The converted head against the causal LM's full-vocabulary logits (an independent path)."""

import json

import numpy as np
import pytest
import torch

from rerank_export.contract import Contract
from rerank_export.formats.baseline import TorchBackend, to_sequence_classifier
from rerank_export.reference import ReferenceBackend

pytestmark = pytest.mark.needs_fixtures

FP32_TOLERANCE = 1e-5
PAIRS = [("What is the capital of China?", "The capital of China is Beijing."),
         ("Explain gravity", "Gravity pulls masses together. " * 12),
         ("中国的首都是哪里？", "北京")]


def _batch(source, side):
    contract = Contract(source.tokenizer)
    seqs = [contract.encode(q, d).input_ids for q, d in PAIRS]
    width = max(map(len, seqs))
    pad = [[contract.pad_id] * (width - len(s)) for s in seqs]
    ids = [p + s if side == "left" else s + p for p, s in zip(pad, seqs)]
    mask = [[0] * len(p) + [1] * len(s) if side == "left" else [1] * len(s) + [0] * len(p)
            for p, s in zip(pad, seqs)]
    return np.array(ids), np.array(mask), seqs


def _full_vocab_p_yes(source, seqs):
    """softmax over (no, yes) of the full causal-LM logits, one unpadded sequence at a time."""
    out = []
    for s in seqs:
        with torch.no_grad():
            logits = source.lm(input_ids=torch.tensor([s])).logits[0, -1]
        pair = torch.stack([logits[source.contract.no_id], logits[source.contract.yes_id]])
        out.append(torch.softmax(pair.double(), 0)[1].item())
    return np.array(out)


@pytest.mark.parametrize("side", ["left", "right"])
def test_converted_head_matches_reference(source, side):
    ids, mask, seqs = _batch(source, side)
    expected = _full_vocab_p_yes(source, seqs)
    model = to_sequence_classifier(source, "fp32")
    converted = 1 / (1 + np.exp(-TorchBackend(model).logits(ids, mask).astype(np.float64)))
    reference = 1 / (1 + np.exp(-ReferenceBackend(source).logits(ids, mask).astype(np.float64)))
    np.testing.assert_allclose(converted, expected, atol=FP32_TOLERANCE)
    np.testing.assert_allclose(reference, expected, atol=FP32_TOLERANCE)


def test_conversion_leaves_the_source_untouched(source):
    before = source.lm.model.layers[0].self_attn.q_proj.weight.clone()
    model = to_sequence_classifier(source, "bf16")
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert torch.equal(source.lm.model.layers[0].self_attn.q_proj.weight, before)
    assert model.config.pad_token_id == source.tokenizer.pad_token_id
    # The rotary buffer is the source's, not the garbage of a meta-device to_empty().
    assert torch.equal(model.model.rotary_emb.inv_freq, source.lm.model.rotary_emb.inv_freq)


def test_baseline_folder_loads_with_plain_auto_class(baseline_artifacts):
    from transformers import AutoModelForSequenceClassification

    folder = baseline_artifacts / "baseline-bf16"
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_theta"] == 1_000_000.0 and len(config["id2label"]) == 1
    assert config["architectures"] == ["Qwen3ForSequenceClassification"] and config["pad_token_id"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    assert model.score.weight.shape == (1, config["hidden_size"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "baseline-bf16" and manifest["head_row_order"] == "yes-minus-no"
    assert set(manifest["files"]) >= {"model.safetensors", "config.json"}
    assert manifest["memory"]["weight_bytes"] > 0 and manifest["memory"]["activation_bytes_per_token"] > 0
