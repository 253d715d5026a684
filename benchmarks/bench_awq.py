"""One-off AWQ export measurement on a random-weight model of the real Qwen3-Reranker-0.6B shape.

    .venv/bin/python benchmarks/bench_awq.py [--clip] [--samples 64] [--out DIR]

Set RERANK_EXPORT_CACHE to an empty folder to time the search itself (a cached search is reused).

Builds the model once under benchmarks/out/ (tokenizer from ../shared/fixtures), exports awq-int4, and
writes search time, total export time, peak RSS and artifact bytes to benchmarks/out/awq_real_shape*.json.
Pairs/s through the 4-bit runtime is measured by the shared format benchmark (bench_formats.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from realshape import build_real_shape

from rerank_export.export import export_formats
from rerank_export.memory import peak_rss_bytes
from rerank_export.reference import SourceModel

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip", action="store_true", help="include the clip search")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT / "artifacts",
                        help="artifacts root (a new folder: an existing awq-int4 there is an error)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model_dir = build_real_shape()
    source = SourceModel(str(model_dir))
    start, cpu_start = time.perf_counter(), time.process_time()
    (manifest,) = export_formats(str(model_dir), None, args.out, ["awq-int4"],
                                 {"awq-int4": {"clip": args.clip, "calib_samples": args.samples}}, source=source)
    from rerank_export.host import describe_cpu

    record = {"cpu": describe_cpu(), "clip": args.clip, "samples": args.samples, "export_seconds": round(time.perf_counter() - start, 1),
              # wall time depends on who else uses the cores; CPU seconds / cores is the unloaded estimate
              "export_cpu_seconds": round(time.process_time() - cpu_start, 1),
              "search_seconds": manifest.details["search_seconds"], "calibration": manifest.details["calibration"],
              "peak_rss_bytes": peak_rss_bytes(), "artifact_bytes": sum(f["bytes"] for f in manifest.files.values()),
              "resident_weight_bytes": manifest.memory.weight_bytes}
    name = f"awq_real_shape{'_clip' if args.clip else ''}.json"
    (OUT / name).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
