"""Runtime benchmarks (CPU): the memory model against measured RSS, and the shared-prefix speed-up.

    .venv/bin/python benchmarks/bench_runtime.py --shape tiny        # seconds
    .venv/bin/python benchmarks/bench_runtime.py --shape qwen3-0.6b  # real 0.6B shape, random weights
    .venv/bin/python benchmarks/bench_runtime.py --artifact benchmarks/out/artifacts/baseline-fp32 \
        --skip-prefix --memory-shapes 1x4096 1x8192                  # long sequences, an existing artifact

1. Memory: for batches of B x L tokens, peak RSS above the loaded RSS (each in a fresh process) against
   the manifest's estimate B x L x bytes_per_token(L). Reported as measured / estimated.
   The GPU estimate is the same arithmetic; it was not measured on a GPU here.
2. Prefix reuse: one query with N short documents, scored with and without reusing the query's KV cache.
Random weights give real shapes and real costs; scores are meaningless and not reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from realshape import build_real_shape

from rerank_export.export import export_formats
from rerank_export.formats.baseline import load
from rerank_export.manifest import read_manifest
from rerank_export.memory import measure_peak
from rerank_export.prefix import PrefixReuseBackend
from rerank_export.reference import SourceModel
from rerank_export.scoring import score_encoded
from rerank_export.tiny import build_tiny

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "qwen3-reranker-0.6b"
SHAPES = ("tiny", "qwen3-0.6b")  # the embedded tiny model; the real 0.6B shape with random weights
MEMORY_SHAPES = [(1, 256), (4, 512), (8, 256), (1, 2048), (2, 2048)]


def build_artifact(shape: str, work: Path) -> Path:
    model = build_real_shape() if shape == "qwen3-0.6b" else build_tiny(work / "model-tiny", TOKENIZER, seed=0)
    source = SourceModel(str(model))
    export_formats(str(model), None, work / "artifacts", ["baseline-fp32"], source=source)
    return work / "artifacts" / "baseline-fp32"


def memory_rows(folder: Path, shapes: list[tuple[int, int]]) -> list[str]:
    """Each B x L measured in a fresh process (rerank_export.memory), against the manifest's estimate."""
    memory = read_manifest(folder).memory
    rows = ["| B x L | tokens | estimated MiB | measured MiB | measured / estimated |", "|---|---|---|---|---|"]
    for b, length in shapes:
        measured = measure_peak(folder, b, length)["peak_above_loaded"]
        estimate = memory.bytes_per_token(length) * b * length
        rows.append(f"| {b} x {length} | {b * length} | {estimate / 2**20:.1f} | {measured / 2**20:.1f} | "
                    f"{measured / estimate:.2f} |")
    return rows


def prefix_rows(folder: Path, docs: int, repeats: int) -> list[str]:
    manifest = read_manifest(folder)
    plain = load(folder, manifest, "cpu")
    reuse = PrefixReuseBackend(plain)
    from rerank_export.contract import Contract, load_tokenizer

    contract = Contract(load_tokenizer(folder))
    rng = np.random.default_rng(0)
    words = ["river", "city", "bridge", "market", "school", "garden", "music", "history", "science", "winter", "harbour", "library"]
    query = "Which passage describes the history of the old harbour bridge in the city?"
    pairs = [(query, " ".join(rng.choice(words, size=int(rng.integers(8, 24))))) for _ in range(docs)]
    encoded = [contract.encode(q, d) for q, d in pairs]  # tokenisation is the same for both: not timed
    tokens = sum(len(e.input_ids) for e in encoded)
    backends = {"no reuse": plain, "prefix reuse": reuse}
    timings: dict[str, list[float]] = {name: [] for name in backends}
    for backend in backends.values():
        score_encoded(backend, encoded[:2], contract.pad_id)  # warm-up
    for _ in range(repeats):  # interleaved, so load from other processes hits both paths alike
        for name, backend in backends.items():
            start = time.perf_counter()
            score_encoded(backend, encoded, contract.pad_id)
            timings[name].append(time.perf_counter() - start)
    timings = {k: min(v) for k, v in timings.items()}
    return [f"{docs} documents, {tokens} tokens in all, best of {repeats}:",
            "| path | seconds | docs/s |", "|---|---|---|",
            *[f"| {k} | {v:.2f} | {docs / v:.1f} |" for k, v in timings.items()],
            f"speed-up: {timings['no reuse'] / timings['prefix reuse']:.2f}x"]


def _shape(text: str) -> tuple[int, int]:
    batch, length = text.lower().split("x")
    return int(batch), int(length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-prefix", action="store_true")
    parser.add_argument("--memory-shapes", nargs="+", metavar="BxL", type=_shape,
                        default=MEMORY_SHAPES, help="batch x length to measure, e.g. 1x8192")
    parser.add_argument("--artifact", type=Path,
                        help="an existing artifact (skips the export; prefix reuse needs a baseline one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artifact or build_artifact(args.shape, Path(tmp))
        print(f"## {folder}: {read_manifest(folder).format}, CPU\n")
        if not args.skip_memory:
            print("\n".join(memory_rows(folder, args.memory_shapes)) + "\n")
        if not args.skip_prefix:
            print("\n".join(prefix_rows(folder, args.docs, args.repeats)))


if __name__ == "__main__":
    main()
