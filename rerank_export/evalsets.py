"""Eval and calibration sets: the built-in set, readers for NovelEval / T2Ranking, and users' JSONL.

User JSONL, one query per line:
    {"query": "...", "documents": ["...", {"text": "..."}], "labels": [2, 0], "instruction": "..."}
or one pair per line: {"query": "...", "document": "..."}.
`labels` (graded relevance, any non-negative numbers) and `instruction` are optional.
T2Ranking-style lines {"query": ..., "pos": [...], "neg": [...]} are read as labels 1/0.
A folder holding corpus.tsv, queries.tsv and qrels.txt is read as NovelEval.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import EvalSetError, first_line

BUILTIN = "builtin"
LONG_DOC_REPEATS = 1200  # ~16k tokens with the Qwen tokenizer: past the default 8192, so it is truncated


@dataclass(frozen=True)
class EvalGroup:
    """One query with its candidate documents (and optional graded labels)."""

    id: str
    query: str
    documents: tuple[str, ...]
    labels: tuple[float, ...] | None = None
    instruction: str | None = None


@dataclass(frozen=True)
class EvalSet:
    name: str
    groups: tuple[EvalGroup, ...] = field(default_factory=tuple)

    @property
    def num_pairs(self) -> int:
        return sum(len(g.documents) for g in self.groups)

    def limit(self, max_groups: int | None) -> EvalSet:
        return self if max_groups is None else EvalSet(self.name, self.groups[:max_groups])

    def digest(self) -> str:
        """sha256 of everything that is scored or judged (queries, documents, labels, instructions), in order;
        names and ids are left out, so the same pairs read from another file give the same digest."""
        content = [[g.query, list(g.documents), g.labels and list(g.labels), g.instruction] for g in self.groups]
        return hashlib.sha256(json.dumps(content).encode("ascii")).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Size and digest, as the manifest's parity record keeps them."""
        return {"pairs": self.num_pairs, "queries": len(self.groups), "sha256": self.digest()}


def builtin_eval_set(long_document: bool = True) -> EvalSet:
    """English, Chinese, code, a duplicate, blank documents, and one document long enough to truncate."""
    text = resources.files("rerank_export").joinpath("data/builtin_eval.jsonl").read_text(encoding="utf-8")
    groups = [_user_group(json.loads(line), f"builtin:{n}") for n, line in enumerate(text.splitlines(), 1)]
    if long_document:
        para = "The Great Wall of China is a series of fortifications built across the northern borders. "
        groups.append(EvalGroup(
            "en-long", "How long is the Great Wall of China?",
            (para * LONG_DOC_REPEATS, "The Great Wall is about 21,196 km long.", "Bananas are rich in potassium."),
            (2.0, 2.0, 0.0),
        ))
    return EvalSet(BUILTIN, tuple(groups))


def load_eval_set(spec: str | Path) -> EvalSet:
    """`builtin`, a NovelEval folder, or a JSONL file (user format or T2Ranking's pos/neg)."""
    if str(spec) == BUILTIN:
        return builtin_eval_set()
    path = Path(spec)
    if path.is_dir():
        evalset = _read_noveleval(path)
    elif path.is_file():
        evalset = read_jsonl(path)
    else:
        raise EvalSetError(f"eval set '{spec}' not found (give 'builtin', a JSONL file or a NovelEval folder)")
    if not evalset.groups or evalset.num_pairs == 0:
        raise EvalSetError(f"eval set '{spec}' has no (query, document) pairs")
    return evalset


def read_jsonl(path: Path) -> EvalSet:
    groups = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        record = _parse_line(line, where)
        groups.append(_t2ranking_group(record, where) if "pos" in record else _user_group(record, where))
    return EvalSet(path.stem, tuple(groups))


def _parse_line(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalSetError(f"{where} is not valid JSON: {exc.msg}") from exc
    except ValueError as exc:  # Python's limit on an integer's digits (its advice is for programmers)
        raise EvalSetError(f"{where} is not valid JSON: {first_line(exc).split(';')[0]}") from exc
    except RecursionError:
        raise EvalSetError(f"{where} is nested too deeply to read as JSON") from None
    if not isinstance(record, dict):
        raise EvalSetError(f"{where}: expected a JSON object per line")
    return record


def _text(value: str, where: str, what: str) -> str:
    """`value` when it is valid Unicode: a JSON escape such as \\ud800 decodes to a lone surrogate, which no
    tokenizer can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EvalSetError(f"{where}: {what} is not valid Unicode (a lone surrogate "
                           f"\\u{ord(value[exc.start]):04x} at character {exc.start}); write the text as UTF-8") from None
    return value


def _user_group(record: dict[str, Any], where: str) -> EvalGroup:
    query = record.get("query")
    docs = [record["document"]] if "document" in record else record.get("documents")
    if not isinstance(query, str) or not query.strip():
        raise EvalSetError(f"{where}: 'query' must be a non-empty string")
    _text(query, where, "'query'")
    if not isinstance(docs, list) or not docs:
        raise EvalSetError(f"{where}: expected a 'document' string or a non-empty 'documents' list "
                           "(or 'pos'/'neg')")
    texts = tuple(_doc_text(d, where) for d in docs)
    labels = record.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != len(texts):
            raise EvalSetError(f"{where}: 'labels' must be a list as long as 'documents'")
        if not all(isinstance(x, (int, float)) and x >= 0 for x in labels):
            raise EvalSetError(f"{where}: 'labels' must be non-negative numbers")
        labels = tuple(float(x) for x in labels)
    instruction = record.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise EvalSetError(f"{where}: 'instruction' must be a string")
    if instruction is not None:
        _text(instruction, where, "'instruction'")
    return EvalGroup(_text(str(record.get("id", where)), where, "'id'"), query, texts, labels, instruction)


def _doc_text(doc: Any, where: str) -> str:
    if isinstance(doc, dict):
        doc = doc.get("text")
    if not isinstance(doc, str):
        raise EvalSetError(f"{where}: every document must be a string or {{\"text\": string}}")
    return _text(doc, where, "a document")


def _t2ranking_group(record: dict[str, Any], where: str) -> EvalGroup:
    query, pos, neg = record.get("query"), record.get("pos", []), record.get("neg", [])
    if not isinstance(query, str) or not isinstance(pos, list) or not isinstance(neg, list):
        raise EvalSetError(f"{where}: expected {{'query': str, 'pos': [str], 'neg': [str]}}")
    _text(query, where, "'query'")
    pos, neg = [_doc_text(d, where) for d in pos], [_doc_text(d, where) for d in neg]
    both = set(pos) & set(neg)  # label noise in T2Ranking: a passage listed as pos and neg; drop it
    docs = [(d, 1.0) for d in pos if d not in both] + [(d, 0.0) for d in neg if d not in both]
    if not docs:
        raise EvalSetError(f"{where}: no documents after dropping passages listed as both pos and neg")
    return EvalGroup(where, query, tuple(d for d, _ in docs), tuple(x for _, x in docs))


def _read_noveleval(folder: Path) -> EvalSet:
    files = {name: folder / name for name in ("corpus.tsv", "queries.tsv", "qrels.txt")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise EvalSetError(f"'{folder}' is not a NovelEval folder: missing {', '.join(missing)}")
    # One passage contains literal tabs: split on the first tab only.
    corpus = dict(_split_tab(line, files["corpus.tsv"]) for line in _lines(files["corpus.tsv"]))
    queries = dict(_split_tab(line, files["queries.tsv"]) for line in _lines(files["queries.tsv"]))
    judged: dict[str, list[tuple[str, float]]] = {}
    for line in _lines(files["qrels.txt"]):
        parts = line.split()
        if len(parts) != 4:
            raise EvalSetError(f"{files['qrels.txt']}: expected 'qid Q0 docid rel', got {line!r}")
        qid, _, docid, rel = parts
        if docid not in corpus:
            raise EvalSetError(f"{files['qrels.txt']}: docid {docid!r} is not in corpus.tsv")
        judged.setdefault(qid, []).append((docid, float(rel)))
    groups = tuple(
        EvalGroup(f"noveleval:{qid}", queries[qid], tuple(corpus[d] for d, _ in pairs),
                  tuple(r for _, r in pairs))
        for qid, pairs in sorted(judged.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0])
        if qid in queries
    )
    return EvalSet("noveleval", groups)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    return [line.rstrip("\n") for line in text.splitlines() if line.strip()]


def _split_tab(line: str, path: Path) -> tuple[str, str]:
    if "\t" not in line:
        raise EvalSetError(f"{path}: expected 'id<TAB>text', got {line[:60]!r}")
    key, text = line.split("\t", 1)
    return key, text
