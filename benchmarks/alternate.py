"""Two artifacts alternating pair by pair in one process, for a change too small to see across this
machine's drift (lockstep.py says what it is): each scores the same documents one call each, taking the
first place on every other document. Prints ms per pair of each in each place, and the largest score
difference between them.

    .venv/bin/python benchmarks/alternate.py OLD_ARTIFACT NEW_ARTIFACT [DOCS]
"""

from __future__ import annotations

import argparse
import statistics
import time

from realshape import QUERY, documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs=2)
    parser.add_argument("docs", nargs="?", type=int, default=30)
    args = parser.parse_args()

    import rerank_export

    loaded = [rerank_export.load(a, device="cpu", allow_unverified=True) for a in args.artifacts]
    texts = documents(args.docs)
    for reranker in loaded:
        reranker.score([(QUERY, texts[0])])  # warm-up
    ms: dict[tuple[int, int], list[float]] = {(who, place): [] for who in (0, 1) for place in (0, 1)}
    diff = 0.0
    for i, text in enumerate(texts):
        scores = {}
        for place, who in enumerate((0, 1) if i % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            scores[who] = loaded[who].score([(QUERY, text)])[0]
            ms[who, place].append((time.perf_counter() - start) * 1000)
        diff = max(diff, abs(scores[0] - scores[1]))
    for place in (0, 1):
        old, new = (statistics.median(ms[who, place]) for who in (0, 1))
        print(f"place {place + 1}: median ms per pair {old:.0f} -> {new:.0f} ({old / new:.3f}x)")
    print(f"max |dp| between them: {diff:.2e}")


if __name__ == "__main__":
    main()
