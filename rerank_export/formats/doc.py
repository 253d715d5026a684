"""What the docs show from FORMATS, rendered from it so it can be regenerated, never copied by hand:
the parity thresholds table (`python -m rerank_export.formats --thresholds-table`)."""

from __future__ import annotations

from collections.abc import Mapping

from .spec import FormatSpec, Thresholds

# The table sits between these in README.md or docs/*.md (tests/unit/test_thresholds_doc.py finds it there).
START, END = "<!-- thresholds:start -->", "<!-- thresholds:end -->"
# Column heading -> the Thresholds fields in its cells ("mean / worst" when two).
COLUMNS = {"max abs dp": ("max_abs_dp",), "mean abs dp": ("mean_abs_dp",),
           "Spearman mean / worst": ("min_spearman_mean", "min_spearman_worst"),
           "Kendall mean": ("min_kendall_mean",), "top-1": ("min_top1",), "NDCG@10 vs ref": ("min_ndcg10",),
           "batch dp": ("max_batch_dp",)}


def thresholds_table(formats: Mapping[str, FormatSpec]) -> str:
    """A Markdown table of every format's limits; formats with equal limits share a row, the formats
    closest to the reference (fidelity) first."""
    rows: dict[Thresholds, list[FormatSpec]] = {}
    for spec in formats.values():
        rows.setdefault(spec.thresholds, []).append(spec)
    lines = ["| format | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for limits, specs in sorted(rows.items(), key=lambda row: -max(s.fidelity for s in row[1])):
        names = [s.name for s in specs]
        cells = [" / ".join(number(getattr(limits, f)) for f in fields) for fields in COLUMNS.values()]
        lines.append(f"| {', '.join(names)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def number(value: float | None) -> str:
    """1e-05 as 1e-5, 0.03 as 0.03; None (the metric is not checked) in words."""
    if value is None:
        return "not checked"
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return repr(float(value))
