"""One measurement in its own process, so peak RSS (VmHWM) belongs to one format only.

    python benchmarks/_measure.py export --model DIR --out ROOT --format NAME
    python benchmarks/_measure.py score  --folder ROOT/NAME --batch 8 --length 256 --threads 1 --repeats 2

Prints one JSON line on stdout; bench_formats.py collects them.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rerank_export.memory import peak_rss_bytes


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Run one format's exporter; the time excludes loading the fp32 source (shared by every format)."""
    from rerank_export.export import export_formats
    from rerank_export.formats import get_format
    from rerank_export.reference import SourceModel

    spec = get_format(args.format)
    start = time.perf_counter()
    source = SourceModel(args.model)
    loaded = time.perf_counter()
    (manifest,) = export_formats(args.model, None, Path(args.out), [spec.name], source=source)
    done = time.perf_counter()
    folder = Path(args.out) / spec.name
    return {"format": spec.name, "load_source_s": loaded - start, "export_s": done - loaded,
            "export_peak_rss": peak_rss_bytes(), "bytes": sum(f["bytes"] for f in manifest.files.values()),
            "weight_bytes": manifest.memory.weight_bytes, "folder": str(folder)}


def score(args: argparse.Namespace) -> dict[str, Any]:
    """pairs/s for batch x length random tokens (no padding) after one warm-up batch."""
    import torch

    from rerank_export.formats import get_format
    from rerank_export.manifest import read_manifest

    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.folder)
    spec = get_format(manifest.format)
    start = time.perf_counter()
    # Loaders that take a thread count get it; torch-based ones follow torch.set_num_threads above.
    extra = {"threads": args.threads} if "threads" in inspect.signature(spec.loader).parameters else {}
    backend = spec.loader(Path(args.folder), manifest, "cpu", **extra)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 100_000, size=(args.batch, args.length), dtype=np.int64)
    mask = np.ones_like(ids)
    backend.logits(ids, mask)  # warm-up: lazy allocation and kernel selection
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = backend.logits(ids, mask)
        times.append(time.perf_counter() - t)
    best = min(times)
    return {"format": spec.name, "load_s": load_s, "batch_s": best, "pairs_per_s": args.batch / best,
            "score_peak_rss": peak_rss_bytes(), "finite": bool(np.isfinite(out).all()), "threads": args.threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    e = sub.add_parser("export")
    e.add_argument("--model", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--format", required=True)
    s = sub.add_parser("score")
    s.add_argument("--folder", required=True)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--length", type=int, default=256)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    result = {"export": export, "score": score}[args.what](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
