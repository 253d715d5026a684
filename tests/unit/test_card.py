"""Each artifact folder explains itself: a generated README.md model card written with the parity verdict."""

from __future__ import annotations

import dataclasses

import pytest

from rerank_export.card import render_card
from rerank_export.contract import PREFIX, SUFFIX
from rerank_export.evalsets import builtin_eval_set
from rerank_export.manifest import read_manifest, verify_files
from rerank_export.parity import check_artifacts

pytestmark = pytest.mark.needs_fixtures


def _front_matter(text: str) -> list[str]:
    assert text.startswith("---\n")
    return text.split("---\n")[1].splitlines()


def test_the_gate_writes_a_card_with_verdict_contract_and_load_commands(baseline_artifacts, source, copy_tree):
    root = copy_tree(baseline_artifacts)
    check_artifacts(root, source, [builtin_eval_set(False).limit(1)], names=["baseline-fp32"])
    folder = root / "baseline-fp32"
    card = (folder / "README.md").read_text()
    head = _front_matter(card)
    assert not any(line.startswith("base_model:") for line in head)  # a local folder is no hub model
    assert f"`{source.model_id}`" in card and "library_name: transformers" in head
    assert "pipeline_tag: text-ranking" in head and "- baseline" in head
    assert "Parity against the source model: **pass**" in card and "| baseline-fp32 | PASS |" in card
    assert PREFIX in card and SUFFIX.strip() in card and "![scores against the reference](parity.png)" in card
    assert "--chat-template ./chat_template.jinja" in card and "--quantization" not in card
    assert (folder / "chat_template.jinja").is_file()  # the file the vLLM command names
    verify_files(folder, read_manifest(folder))  # the card is not one of the hashed files


def test_cards_follow_the_format_family(baseline_artifacts):
    manifest = read_manifest(baseline_artifacts / "baseline-fp32")
    onnx = render_card(dataclasses.replace(manifest, format="onnx-int8", dtype="int8"), None)
    assert "library_name: onnxruntime" in _front_matter(onnx) and "vllm serve" not in onnx
    assert "InferenceSession" in onnx and "Not checked yet" in onnx
    hub = render_card(dataclasses.replace(manifest, source_model="Qwen/Qwen3-Reranker-0.6B"), None)
    assert "base_model: Qwen/Qwen3-Reranker-0.6B" in _front_matter(hub)
    assert "[Qwen/Qwen3-Reranker-0.6B](https://huggingface.co/Qwen/Qwen3-Reranker-0.6B)" in hub
    awq = render_card(dataclasses.replace(manifest, format="awq-int4", dtype="int4"), None)
    assert "--chat-template ./chat_template.jinja --quantization awq" in awq
