"""parity --engine vllm's pieces that need no vLLM: which folders vLLM loads, and truncated documents sent
as the contract kept them."""

from __future__ import annotations

import pytest

from rerank_export.contract import Contract
from rerank_export.vllm.engine import scored_document, vllm_loadable

pytestmark = pytest.mark.needs_fixtures

QUERY = "How long is the Great Wall of China?"
LONG = "The Great Wall of China is a series of fortifications built across the northern borders. " * 40


def test_vllm_loads_the_torch_artifacts_only(baseline_artifacts, tmp_path):
    assert vllm_loadable(baseline_artifacts / "baseline-fp32")
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert not vllm_loadable(tmp_path) and not vllm_loadable(tmp_path / "missing")


@pytest.mark.parametrize("instruction", [None, "Find the length"])
def test_a_truncated_document_is_sent_as_the_contract_kept_it(qwen_tokenizer, instruction):
    contract = Contract(qwen_tokenizer, max_length=200)
    kept = scored_document(contract, QUERY, LONG, instruction)
    assert contract.encode(QUERY, LONG, instruction).truncated and LONG.startswith(kept) and kept != LONG
    # vLLM tokenizes the rendered prompt whole: the kept text gives the contract's ids again
    whole = contract.encode(QUERY, kept, instruction)
    assert not whole.truncated and whole.input_ids == contract.encode(QUERY, LONG, instruction).input_ids


def test_a_short_document_is_sent_whole(qwen_tokenizer):
    assert scored_document(Contract(qwen_tokenizer), QUERY, "About 21,196 km.", None) == "About 21,196 km."
