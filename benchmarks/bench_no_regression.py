"""The checks that ride along a speed change, on the random 0.6B shape: one 8,192-token document's peak memory
above the loaded model (a fresh process), and six documents scored alone against beside a ~4,000-token one.

    .venv/bin/python benchmarks/bench_no_regression.py [--artifact benchmarks/out/artifacts/onnx-int8]
"""

from __future__ import annotations

import argparse
import json

from realshape import OUT, QUERY, documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", default=str(OUT / "artifacts" / "onnx-int8"))
    folder = parser.parse_args().artifact

    import rerank_export
    from rerank_export.memory import measure_peak

    memory = measure_peak(folder, 1, 8192)
    reranker = rerank_export.load(folder, device="cpu", allow_unverified=True, max_length=8192)
    docs, long = documents(6, 200), documents(1, 4000)[0]
    alone = [reranker.score([(QUERY, d)])[0] for d in docs]
    beside = reranker.score([(QUERY, d) for d in docs] + [(QUERY, long)])[:6]
    print(json.dumps({"artifact": folder, "loaded_mib": memory["loaded"] / 2**20,
                      "peak_above_loaded_mib_8192_tokens": memory["peak_above_loaded"] / 2**20,
                      "max_abs_dp_alone_vs_beside_long": max(abs(a - b) for a, b in zip(alone, beside))}))


if __name__ == "__main__":
    main()
