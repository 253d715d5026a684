"""Shared-prefix KV reuse against the no-reuse forward pass and the reference causal LM (fp32, tiny)."""

from __future__ import annotations

import numpy as np
import pytest

from rerank_export.contract import pad_left
from rerank_export.prefix import (
    MIN_PREFIX_TOKENS,
    PrefixReuseBackend,
    common_prefix_length,
    prefix_cache,
    right_pad,
)
from rerank_export.reference import ReferenceBackend
from rerank_export.scoring import OutOfMemory, score_pairs

pytestmark = pytest.mark.needs_fixtures

REUSE_TOL = 1e-4  # the bound for reuse vs no reuse, fp32
REFERENCE_TOL = 1e-4

DOCS = [
    "Paris is the capital and largest city of France.",
    "Paris",
    "",
    "   ",
    "Bananas are rich in potassium. " * 20,
    "巴黎是法国的首都。",
    "def capital(country):\n    return {'France': 'Paris'}[country]",
    "Paris is the capital and largest city of France.",  # duplicate: scored once
    "The the the the",
]


@pytest.fixture(scope="module")
def torch_backend(source):
    from rerank_export.formats.baseline import TorchBackend, to_sequence_classifier

    return TorchBackend(to_sequence_classifier(source, "fp32"), "baseline-fp32")


def test_common_prefix_length_leaves_a_tail():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows keep one tail token
    assert common_prefix_length([[1], [1, 2]]) == 0
    assert common_prefix_length([[7, 8]]) == 1
    assert common_prefix_length([]) == 0


def test_right_pad():
    ids, mask, lengths = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert lengths.tolist() == [3, 1]


@pytest.mark.parametrize("instruction", [None, "Find the passage naming a capital city"])
def test_reuse_equals_no_reuse_and_reference(source, torch_backend, instruction):
    pairs = [("What is the capital of France?", d) for d in DOCS]
    reuse = PrefixReuseBackend(torch_backend)
    with_reuse = np.array(score_pairs(reuse, source.contract, pairs, instruction).scores)
    without = np.array(score_pairs(torch_backend, source.contract, pairs, instruction).scores)
    reference = np.array(score_pairs(ReferenceBackend(source), source.contract, pairs, instruction).scores)
    assert reuse.stats["reused"] >= 1 and reuse.stats["prefix_tokens_saved"] > 0
    assert np.max(np.abs(with_reuse - without)) < REUSE_TOL
    assert np.max(np.abs(with_reuse - reference)) < REFERENCE_TOL


def test_reuse_with_small_batches_and_truncated_documents(qwen_tokenizer, source, torch_backend):
    from rerank_export.contract import Contract

    contract = Contract(qwen_tokenizer, max_length=96)  # forces truncation of the long documents
    pairs = [("capital of France", d) for d in DOCS]
    reuse = PrefixReuseBackend(torch_backend)
    a = score_pairs(reuse, contract, pairs, token_budget=200)  # several batches, each with its own prefix
    b = score_pairs(torch_backend, contract, pairs, token_budget=200)
    assert any(a.truncated)
    assert np.max(np.abs(np.array(a.scores) - np.array(b.scores))) < REUSE_TOL


def test_rows_without_a_long_shared_prefix_fall_back(source, torch_backend):
    reuse = PrefixReuseBackend(torch_backend)
    rows = [[11, 12, 13, 14], [11, 99, 98]]
    assert common_prefix_length(rows) < MIN_PREFIX_TOKENS
    ids, mask = pad_left(rows, source.contract.pad_id)
    ids, mask = np.asarray(ids), np.asarray(mask)
    out = reuse.logits(ids, mask)
    assert reuse.stats["reused"] == 0
    assert np.allclose(out, torch_backend.logits(ids, mask))


def test_the_cache_keeps_only_the_prefix(source, torch_backend, monkeypatch):
    """The tails' keys/values are not stored: memory stays that of one layer's [prefix | tails] at a time."""
    import rerank_export.prefix as prefix_module

    caches = []

    def recording(kv, batch):
        caches.append(prefix_cache(kv, batch))
        return caches[-1]

    monkeypatch.setattr(prefix_module, "prefix_cache", recording)
    reuse = PrefixReuseBackend(torch_backend)
    pairs = [("What is the capital of France?", d) for d in DOCS[:3]]
    score_pairs(reuse, source.contract, pairs)
    (cache,) = caches
    shared = common_prefix_length([source.contract.encode(q, d).input_ids for q, d in pairs])
    assert [layer.keys.shape[-2] for layer in cache.layers] == [shared] * source.lm.config.num_hidden_layers
    assert cache.layers[0].keys.shape[0] == 3 and cache.layers[0].keys.stride(0) == 0  # a view, not 3 copies


def test_out_of_memory_becomes_the_batchers_signal(source, torch_backend, monkeypatch):
    import torch

    reuse = PrefixReuseBackend(torch_backend)

    def boom(rows, shared):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(reuse, "_reuse", boom)
    encoded = [source.contract.encode("q?", d) for d in ("a b c", "d e f")]
    ids, mask = pad_left([e.input_ids for e in encoded], source.contract.pad_id)
    with pytest.raises(OutOfMemory):
        reuse.logits(np.asarray(ids), np.asarray(mask))


def test_rejects_a_backend_without_a_decoder():
    class Plain:
        name = "onnx"

    with pytest.raises(TypeError, match="onnx"):
        PrefixReuseBackend(Plain())
