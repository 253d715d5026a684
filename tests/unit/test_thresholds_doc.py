"""The docs' parity thresholds table says what FORMATS holds: every format once, every number equal.

The table is found between its marker comments in README.md or docs/*.md, and read by a parser of its own
(not formats/doc.py's renderer), so a table edited by hand or left behind after FORMATS changes fails here.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from rerank_export.formats import FORMATS
from rerank_export.formats.__main__ import main
from rerank_export.formats.doc import thresholds_table
from rerank_export.formats.spec import Thresholds

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- thresholds:start -->", "<!-- thresholds:end -->"
REGENERATE = "regenerate it with `python -m rerank_export.formats --thresholds-table`"
# Column heading -> Thresholds fields, written out here rather than imported from the renderer.
COLUMNS = {"max abs dp": ["max_abs_dp"], "mean abs dp": ["mean_abs_dp"],
           "Spearman mean / worst": ["min_spearman_mean", "min_spearman_worst"],
           "Kendall mean": ["min_kendall_mean"], "top-1": ["min_top1"], "NDCG@10 vs ref": ["min_ndcg10"],
           "batch dp": ["max_batch_dp"]}


def documented_table() -> tuple[Path, str]:
    """The one marked table in README.md or docs/*.md, and the file it is in."""
    paths = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]
    found = [(p, block) for p in paths for block in re.findall(f"{START}\n(.*?){END}", p.read_text(), re.DOTALL)]
    assert len(found) == 1, f"expected one {START} ... {END} table in README.md or docs/*.md, found {len(found)}"
    return found[0]


def parse_table(text: str) -> dict[str, dict[str, float | None]]:
    """{format: {field: limit}} from the Markdown table ('a, b' rows name several formats)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.strip().splitlines()]
    header, body = rows[0], [r for r in rows[2:] if r != [""]]
    assert header[0] == "format" and set(header[1:]) == set(COLUMNS), header
    table: dict[str, dict[str, float | None]] = {}
    for row in body:
        limits = {}
        for heading, cell in zip(header[1:], row[1:], strict=True):
            values = cell.split(" / ")
            assert len(values) == len(COLUMNS[heading]), f"{row[0]}: '{cell}' under '{heading}'"
            limits.update(zip(COLUMNS[heading], map(_value, values)))
        for name in row[0].split(", "):
            assert name not in table, f"{name} has two rows"
            table[name] = limits
    return table


def _value(cell: str) -> float | None:
    return None if cell == "not checked" else float(cell)


def test_the_columns_cover_every_threshold():
    assert sorted(f for fs in COLUMNS.values() for f in fs) == sorted(f.name for f in fields(Thresholds))


def test_the_documented_table_equals_formats():
    path, text = documented_table()
    table = parse_table(text)
    assert sorted(table) == sorted(FORMATS), f"{path.name}: formats differ from FORMATS; {REGENERATE}"
    for name, spec in FORMATS.items():
        wrong = {f: (table[name][f], getattr(spec.thresholds, f)) for f in table[name]
                 if table[name][f] != getattr(spec.thresholds, f)}
        assert not wrong, f"{path.name}: {name} (documented, FORMATS): {wrong}; {REGENERATE}"


def test_the_rendered_table_reads_back_as_formats():
    table = parse_table(thresholds_table(FORMATS))
    assert table == {n: {f.name: getattr(s.thresholds, f.name) for f in fields(Thresholds)} for n, s in FORMATS.items()}


def test_the_command_prints_the_table(capsys):
    assert main(["--thresholds-table"]) == 0
    assert capsys.readouterr().out.strip() == thresholds_table(FORMATS)


def test_a_changed_number_is_caught():
    _, text = documented_table()
    changed = parse_table(text.replace("| 0.45 |", "| 0.5 |", 1))
    assert any(changed[n]["max_abs_dp"] != FORMATS[n].thresholds.max_abs_dp for n in changed)


@pytest.mark.parametrize("value, text", [(1e-5, "1e-5"), (2e-6, "2e-6"), (2.5e-4, "2.5e-4"), (0.03, "0.03"),
                                         (1.0, "1.0"), (None, "not checked")])
def test_numbers_are_written_short_and_exact(value, text):
    from rerank_export.formats.doc import number

    assert number(value) == text and _value(text) == value
