"""Side-by-side benchmark of artifact formats on a random-weight model of the real Qwen3-Reranker-0.6B shape.

For every format name (any row of FORMATS: a format registered later is measured by naming it in
--formats) it measures, each step in its own subprocess so peak RSS is per format:
file bytes, export wall time and peak RSS, and pairs/s plus peak RSS for one batch of B pairs x L tokens.

    .venv/bin/python benchmarks/bench_formats.py --threads 1 --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_formats")

HERE = Path(__file__).resolve().parent
MEASURE = HERE / "_measure.py"
DEFAULT_FORMATS = ["baseline-fp32", "baseline-bf16", "onnx-fp32", "onnx-fp16", "onnx-int8"]
LABELS = {"baseline-fp32": "PyTorch fp32 (baseline-fp32)", "baseline-bf16": "PyTorch bf16 (baseline-bf16)"}


def run_step(*args: str) -> dict[str, Any]:
    """Run one _measure.py step in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(MEASURE), *args]
    log.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # a failed step is a row
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_model(out: Path) -> Path:
    """The cached random-weight real-shape model under benchmarks/out/ (built once)."""
    from realshape import build_real_shape

    return build_real_shape(out / "qwen3-reranker-0.6b-random")


def measure(formats: list[str], model: Path, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in formats:
        row: dict[str, Any] = {"format": name}
        row.update(run_step("export", "--model", str(model), "--out", str(root), "--format", name))
        if "error" not in row:
            row.update(run_step("score", "--folder", str(root / name), "--batch", str(args.batch),
                                "--length", str(args.length), "--threads", str(args.threads),
                                "--repeats", str(args.repeats)))
        log.info("%s: %s", name, row)
        rows.append(row)
    return rows


def _mib(n: Any) -> str:
    return f"{n / 2**20:,.0f}" if isinstance(n, (int, float)) else "-"


def _num(n: Any, fmt: str) -> str:
    return format(n, fmt) if isinstance(n, (int, float)) else "-"


def render(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"## Formats side by side (random weights, Qwen3-Reranker-0.6B shape), {time.strftime('%Y-%m-%d')}",
        "",
        f"Command: `{command}`",
        "",
        (f"Machine: {platform.machine()}, {_cpu_model()}, 2 cores shared with other engineers' jobs "
         "(numbers are indicative; rerun on a quiet machine). Scoring: one batch of "
         f"{args.batch} pairs x {args.length} tokens, {args.threads} thread(s), best of {args.repeats} after "
         "a warm-up. Export time excludes loading the fp32 source; export peak RSS includes it (the source "
         "stays loaded while exporting). Every step ran in its own process."),
        "",
        ("| format | files MiB | export s | export peak RSS MiB | pairs/s | score peak RSS MiB | load s "
         "| note |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = r.get("error", "") or ("" if r.get("finite", True) else "NON-FINITE scores")
        lines.append(f"| {LABELS.get(r['format'], r['format'])} | {_mib(r.get('bytes'))} | "
                     f"{_num(r.get('export_s'), '.1f')} | {_mib(r.get('export_peak_rss'))} | "
                     f"{_num(r.get('pairs_per_s'), '.2f')} | {_mib(r.get('score_peak_rss'))} | "
                     f"{_num(r.get('load_s'), '.1f')} | {note} |")
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=DEFAULT_FORMATS, help="FORMATS names to measure")
    parser.add_argument("--model", default=None, 
                        help="source model (default: build the random real-shape one)")
    parser.add_argument("--out", default=str(HERE / "out"), help="cache and artifacts folder (git-ignored)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", default=None, help="RESULTS.md to update (default: print only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from rerank_export.formats import get_format

    for name in args.formats:
        get_format(name)  # an unknown name fails now, listing the known ones
    out = Path(args.out)
    model = Path(args.model) if args.model else ensure_model(out)
    rows = measure(args.formats, model, out / "artifacts", args)
    (out / "bench_formats.json").write_text(json.dumps(rows, indent=1))
    command = "python benchmarks/bench_formats.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = render(rows, args, command.strip())
    print(section)
    if args.results:
        from realshape import write_section

        write_section(Path(args.results), "bench_formats", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
