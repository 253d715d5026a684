"""Every artifact's README.md is executable: each Python snippet runs as written inside the folder, then its
score() takes a mixed-length batch of the built-in eval pairs and must meet the format's limits against the
reference (the causal LM's yes/no logits, an independent path). The card, the tokenizer's config and the
graph agree on padding."""

from __future__ import annotations

import inspect
import json
import re
import shutil

import numpy as np
import pytest

from rerank_export.errors import NoArtifactFits
from rerank_export.evalsets import EvalSet, builtin_eval_set
from rerank_export.export import export_formats
from rerank_export.formats import get_format
from rerank_export.parity import check_artifacts, compare, score_set
from rerank_export.reference import ReferenceBackend

pytestmark = pytest.mark.needs_fixtures

NAMES = ["baseline-fp32", "baseline-bf16", "onnx-fp32", "onnx-fp16", "onnx-int8"]
SNIPPET = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def carded_root(tmp_path_factory, baseline_artifacts, onnx_root, source):
    """The baselines and two ONNX artifacts, gated (the gate writes each card)."""
    root = tmp_path_factory.mktemp("cards") / "artifacts"
    shutil.copytree(baseline_artifacts, root)
    for name in ("onnx-fp32", "onnx-fp16", "onnx-int8"):
        shutil.copytree(onnx_root / name, root / name)
    reports = check_artifacts(root, source, [builtin_eval_set(False).limit(2)])
    assert all(r.passed for r in reports), [(r.name, r.breaches) for r in reports]
    return root


@pytest.fixture(scope="module")
def reference(source):
    return score_set(ReferenceBackend(source), source, builtin_eval_set(False))


def _complete(score, evalset: EvalSet, reference: list[float]) -> tuple[EvalSet, list[float], np.ndarray]:
    """score() on the built-in pairs: those with the default instruction in one mixed-length batch, the
    rest by instruction where score() takes one (sentence-transformers' predict does not: those are left
    out, with their reference scores)."""
    takes_instruction = "instruction" in inspect.signature(score).parameters
    groups, ref, scores = [], [], []
    start = 0
    by_instruction: dict[str | None, list[tuple[int, object]]] = {}
    for group in evalset.groups:
        span = list(range(start, start + len(group.documents)))
        start += len(group.documents)
        if group.instruction is None or takes_instruction:
            by_instruction.setdefault(group.instruction, []).append((span, group))
    for instruction, members in by_instruction.items():
        pairs = [(g.query, d) for _, g in members for d in g.documents]
        kwargs = {"instruction": instruction} if instruction is not None else {}
        scores += np.asarray(score(pairs, **kwargs), dtype=np.float64).reshape(-1).tolist()
        groups += [g for _, g in members]
        ref += [reference[i] for span, _ in members for i in span]
    assert len({len(d) for g in groups for d in g.documents}) > 3, "a mixed-length batch"
    return EvalSet("builtin", tuple(groups)), ref, np.asarray(scores)


def _run_snippets(folder, name: str, reference: list[float], monkeypatch, capsys) -> None:
    spec = get_format(name)
    snippets = SNIPPET.findall((folder / "README.md").read_text())
    # rerank-export's, then one without it (sentence-transformers or onnxruntime); AWQ: rerank-export's only
    assert len(snippets) == (1 if spec.vllm_quantization else 2), snippets
    monkeypatch.chdir(folder)
    for number, code in enumerate(snippets):
        namespace: dict = {"__name__": "__main__"}
        if "cpu" not in spec.devices and "rerank_export.load" in code:  # onnx-fp16: the runtime picks GPUs only
            with pytest.raises(NoArtifactFits, match="runs on cuda only"):
                exec(compile(code, f"{name}/README.md snippet {number + 1}", "exec"), namespace)  # noqa: S102
            continue
        exec(compile(code, f"{name}/README.md snippet {number + 1}", "exec"), namespace)  # noqa: S102 (the card)
        assert capsys.readouterr().out.strip(), "the snippet prints its example's score"
        evalset, ref, scores = _complete(namespace["score"], builtin_eval_set(False), reference)
        report = compare(ref, scores, evalset, spec.thresholds, name)
        assert report.passed, (number + 1, len(evalset.groups), report.breaches)


@pytest.mark.parametrize("name", NAMES)
def test_every_snippet_runs_as_written_and_scores_like_the_reference(carded_root, reference, name,
                                                                     monkeypatch, capsys):
    _run_snippets(carded_root / name, name, reference, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["awq-int4", "onnx-int4"])
def test_the_4bit_cards_run_as_written_and_score_like_the_reference(tmp_path_factory, source, reference, name,
                                                                    monkeypatch, capsys):
    root = tmp_path_factory.mktemp("cards-4bit") / "artifacts"
    search = {"calib_samples": 16, "search_tokens": 512}
    export_formats(source.model_id, None, root, ["awq-int4", name] if name != "awq-int4" else [name],
                   {"awq-int4": search, "onnx-int4": search}, source=source)
    report, = check_artifacts(root, source, [builtin_eval_set(False).limit(2)], names=[name])
    assert report.passed, report.breaches
    _run_snippets(root / name, name, reference, monkeypatch, capsys)


@pytest.mark.parametrize("name", ["onnx-fp32", "onnx-int8"])
def test_card_tokenizer_and_graph_agree_on_padding(carded_root, name):
    import onnx

    from rerank_export.formats import onnx as ox

    folder = carded_root / name
    card = (folder / "README.md").read_text()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    graph = onnx.load(str(folder / ox.MODEL_FILE), load_external_data=False)
    assert {p.key: p.value for p in graph.metadata_props}[ox.PADDING_KEY] == "any"
    assert "**any padding**" in card and "left as this folder's tokenizer pads" in card
    assert config["padding_side"] == "left"
    inputs = [i.name for i in graph.graph.input][:2]
    assert all(f"`{n}`" in card for n in inputs) and "`logit`" in card
