import json

import pytest

from rerank_export.errors import EvalSetError
from rerank_export.evalsets import builtin_eval_set, load_eval_set

from ..conftest import NOVELEVAL, T2RANKING_SMALL


def test_builtin_set_covers_the_hard_cases():
    evalset = builtin_eval_set()
    docs = [d for g in evalset.groups for d in g.documents]
    assert any("北京" in d for d in docs) and any("void quicksort" in d for d in docs)
    assert any(not d.strip() for d in docs), "an empty-looking document"
    assert len(docs) > len(set(docs)), "a duplicated document"
    assert max(len(d) for d in docs) > 8192 * 4, "a document long enough to be truncated at 8192 tokens"
    assert all(g.labels is not None and len(g.labels) == len(g.documents) for g in evalset.groups)


@pytest.mark.needs_fixtures
def test_noveleval_reader_keeps_the_tab_passage():
    evalset = load_eval_set(NOVELEVAL)
    assert (len(evalset.groups), evalset.num_pairs) == (21, 420)
    assert any("\t" in d for g in evalset.groups for d in g.documents)  # passage 14-17 holds tabs
    assert all(max(g.labels) == 2 for g in evalset.groups)


@pytest.mark.needs_fixtures
def test_t2ranking_reader_labels_pos_and_neg():
    evalset = load_eval_set(T2RANKING_SMALL)
    assert (len(evalset.groups), evalset.num_pairs) == (11, 226)
    assert sum(sum(g.labels) for g in evalset.groups) == 61


def test_t2ranking_drops_passages_listed_as_both(tmp_path):
    path = tmp_path / "t2.jsonl"
    path.write_text(json.dumps({"query": "q", "pos": ["a", "b"], "neg": ["b", "c"]}) + "\n")
    group = load_eval_set(path).groups[0]
    assert group.documents == ("a", "c") and group.labels == (1.0, 0.0)


def test_user_jsonl_accepts_text_objects_and_instruction(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"query": "q", "documents": ["x", {"text": "y"}], "labels": [1, 0],
                                "instruction": "Find code"}) + "\n\n")
    group = load_eval_set(path).groups[0]
    assert group.documents == ("x", "y") and group.instruction == "Find code"


@pytest.mark.parametrize("content, message", [
    ("{not json\n", "is not valid JSON"),
    (json.dumps({"query": "", "documents": ["x"]}) + "\n", "'query' must be a non-empty string"),
    (json.dumps({"query": "q", "documents": [1]}) + "\n", "every document must be a string"),
    (json.dumps({"query": "q", "documents": ["x"], "labels": [1, 2]}) + "\n", "as long as 'documents'"),
    ("\n\n", "has no (query, document) pairs"),
])
def test_bad_eval_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EvalSetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_eval_set(path)


def test_missing_eval_file_and_partial_noveleval_folder(tmp_path):
    with pytest.raises(EvalSetError, match="not found"):
        load_eval_set(tmp_path / "nope.jsonl")
    (tmp_path / "corpus.tsv").write_text("0-0\tx\n")
    with pytest.raises(EvalSetError, match="missing"):
        load_eval_set(tmp_path)
