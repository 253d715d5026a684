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

from rerank_export.evalsets import EvalSet, builtin_eval_set
from rerank_export.formats import get_format
from rerank_export.parity import check_artifacts, compare, score_set
from rerank_export.reference import ReferenceBackend

pytestmark = pytest.mark.needs_fixtures

NAMES = ["baseline-fp32", "baseline-bf16", "onnx-fp32", "onnx-int8"]
SNIPPET = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def carded_root(tmp_path_factory, baseline_artifacts, onnx_root, source):
    """The baselines and two ONNX artifacts, gated (the gate writes each card)."""
    root = tmp_path_factory.mktemp("cards") / "artifacts"
    shutil.copytree(baseline_artifacts, root)
    for name in ("onnx-fp32", "onnx-int8"):
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


@pytest.mark.parametrize("name", NAMES)
def test_every_snippet_runs_as_written_and_scores_like_the_reference(carded_root, reference, name,
                                                                     monkeypatch, capsys):
    folder = carded_root / name
    snippets = SNIPPET.findall((folder / "README.md").read_text())
    assert len(snippets) == 2, snippets  # rerank-export and one without it (sentence-transformers / onnxruntime)
    monkeypatch.chdir(folder)
    for number, code in enumerate(snippets):
        namespace: dict = {"__name__": "__main__"}
        exec(compile(code, f"{name}/README.md snippet {number + 1}", "exec"), namespace)  # noqa: S102 (the card)
        assert capsys.readouterr().out.strip(), "the snippet prints its example's score"
        evalset, ref, scores = _complete(namespace["score"], builtin_eval_set(False), reference)
        report = compare(ref, scores, evalset, get_format(name).thresholds, name)
        assert report.passed, (number + 1, len(evalset.groups), report.breaches)


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
