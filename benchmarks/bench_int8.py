"""onnx-int8's methods side by side on the real 0.6B shape, CPU: "dynamic" (quantize_dynamic: one
activation scale per padded batch, so scores move with batch-mates) against "nbits" (8-bit MatMulNBits
blocks) at accuracy levels 4 (int8 activations) and 0 (fp32 activations), with onnx-fp32 as the yardstick.
Pairs/s for one query with N documents of ~200 tokens through rerank_export.load, each in a fresh process,
and how far a document's score moves between alone and beside a ~4,000-token batch-mate.

    .venv/bin/python benchmarks/bench_int8.py [--docs 100] [--results benchmarks/RESULTS.md]

onnx-fp32 and the dynamic onnx-int8 come from one export (benchmarks/out/int8/); each nbits variant is
converted from that onnx-fp32 graph with the exporter's own converter and gets the dynamic artifact's
manifest with its own files and details (its memory model is the dynamic one's: close enough to size
batches). Kept between runs; delete the folder to re-export.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from realshape import OUT, QUERY, build_real_shape, documents, run_worker, write_section

SCRIPT = Path(__file__).resolve()
LONG_LENGTH = 4096  # the long batch-mate fits; at 8,192 the ONNX graphs' attention does not fit this machine


ROOT = OUT / "int8"
VARIANTS = {"nbits-l4": {"method": "nbits", "accuracy_level": 4}, "nbits-l0": {"method": "nbits", "accuracy_level": 0}}


def export(model: Path) -> float:
    """onnx-fp32 and the dynamic onnx-int8 from one trace; seconds (nan when already there)."""
    from rerank_export.export import export_formats
    from rerank_export.reference import SourceModel

    if (ROOT / "onnx-int8" / "manifest.json").is_file():
        return float("nan")
    start = time.perf_counter()
    export_formats(str(model), None, ROOT, ["onnx-fp32", "onnx-int8"], source=SourceModel(str(model)))
    return time.perf_counter() - start


def variant(name: str, options: dict) -> tuple[Path, float]:
    """An nbits onnx-int8 converted from ROOT/onnx-fp32 into ROOT/<name>/onnx-int8 (a root of its own)."""
    import shutil

    from rerank_export.formats import FORMATS, parse_format_options
    from rerank_export.formats.onnx import MODEL_FILE, to_int8
    from rerank_export.manifest import describe_files, read_manifest

    folder = ROOT / name / "onnx-int8"
    if (folder / "manifest.json").is_file():
        return folder, float("nan")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    details = to_int8(ROOT / "onnx-fp32" / MODEL_FILE, folder / MODEL_FILE,
                      parse_format_options(FORMATS["onnx-int8"], options))
    seconds = time.perf_counter() - start
    dynamic = ROOT / "onnx-int8"
    for path in dynamic.iterdir():
        if path.is_file() and not path.name.startswith(("model.onnx", "manifest", "parity", "README")):
            shutil.copy2(path, folder / path.name)
    manifest = read_manifest(dynamic)
    manifest.details = {**manifest.details, **details}
    manifest.files = describe_files(folder)
    manifest.write(folder)
    return folder, seconds


def worker(folder: str, docs: int) -> dict:
    """pairs/s over `docs` documents, then one short document alone and beside a long one."""
    import numpy as np

    import rerank_export

    reranker = rerank_export.load(folder, device="cpu", allow_unverified=True, max_length=LONG_LENGTH)
    texts = documents(docs)
    reranker.score([(QUERY, texts[0])])  # warm-up
    start = time.perf_counter()
    reranker.score([(QUERY, d) for d in texts])
    seconds = time.perf_counter() - start
    short, long = texts[0], " ".join(documents(20))  # ~4,000 tokens
    alone = reranker.score([(QUERY, short)])[0]
    beside = reranker.score([(QUERY, short), (QUERY, long)])[0]
    return {"pairs_per_s": docs / seconds, "seconds": seconds, "batch_dp": float(np.abs(alone - beside)),
            "alone": alone, "beside_long": beside}


def render(rows: list[dict], command: str) -> str:
    from rerank_export.host import cpu_facts, describe_cpu

    lines = ["## onnx-int8: dynamic against nbits (0.6B shape, CPU)", "", f"`{command}`", "",
             (f"CPU: {describe_cpu(cpu_facts())}. One query, {rows[0]['docs']} documents of ~200 tokens, through "
              "rerank_export.load (2 threads); |dp| of one document scored alone against beside a ~4,000-token one."),
             "", ("| artifact | pairs/s | vs dynamic | alone vs beside a long document, abs dp "
                  "| export or conversion s | files MiB |"), "|---|---:|---:|---:|---:|---:|"]
    base = next(r for r in rows if r["method"] == "dynamic")["pairs_per_s"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['pairs_per_s']:.2f} | {r['pairs_per_s'] / base:.2f}x | "
                     f"{r['batch_dp']:.2e} | {r['export_s']:.0f} | {r['mib']:,.0f} |")
    lines += ["", f"One run, {time.strftime('%Y-%m-%d')}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "DOCS"))
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    from rerank_export.manifest import read_manifest

    model = build_real_shape()
    seconds = export(model)
    folders = {"onnx-fp32": (ROOT / "onnx-fp32", seconds), "dynamic": (ROOT / "onnx-int8", seconds)}
    folders.update({name: variant(name, options) for name, options in VARIANTS.items()})
    rows = []
    for method, (folder, export_s) in folders.items():
        row = run_worker(SCRIPT, [str(folder), str(args.docs)])
        size = sum(f["bytes"] for f in read_manifest(folder).files.values()) / 2**20
        rows.append({"method": method, "export_s": export_s, "mib": size, "docs": args.docs, **row})
        print(json.dumps(rows[-1]), flush=True)
    (OUT / "int8.json").write_text(json.dumps(rows, indent=1))
    if args.results:
        write_section(args.results, "bench_int8", render(rows, "python " + " ".join(sys.argv)))


if __name__ == "__main__":
    main()
