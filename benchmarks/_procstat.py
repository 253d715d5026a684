"""Peak-RSS helpers for benchmark workers that run in other venvs (onnxruntime-genai, llm-compressor), where
rerank_export is not installed: the standard library only, as rerank_export.memory reads the same files."""

from __future__ import annotations


def status_bytes(key: str) -> int:
    """A /proc/self/status field (VmRSS, VmHWM) in bytes; 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0; nothing elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def time_scorer(score, docs: int, length: int) -> dict:
    """The timed part of a peer's worker: `score(query, documents)` warmed up on one document, then timed on
    `docs` documents of ~`length` tokens, with its peak RSS above the loaded RSS and its CPU time."""
    import time

    from realshape import QUERY, SCORES_KEPT, documents

    texts = documents(docs, length)
    score(QUERY, texts[:1])  # warm-up outside the measurement
    reset_peak_rss()
    loaded = status_bytes("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    scores = score(QUERY, texts)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"pairs_per_s": docs / seconds, "seconds": seconds, "loaded_mib": loaded / 2**20,
            "peak_above_loaded_mib": (status_bytes("VmHWM") - loaded) / 2**20, "docs": len(scores),
            "prefix_reuse": False, "scores": scores[:SCORES_KEPT],
            "cpu_seconds": cpu}  # ~threads x seconds unless the CPU was shared


# ---------------------------------------------------------------- lockstep workers (benchmarks/lockstep.py drives them)

LOCKSTEP = "LOCKSTEP "  # the prefix of protocol lines on a lockstep worker's stdout (libraries print too)


def serve_lockstep(measure) -> None:
    """A lockstep worker's loop, after its model is loaded and warm: say ready, then answer each stdin line
    "START END" with one line holding `measure(start, end)` (a dict) and its wall and CPU seconds; end at EOF."""
    import json
    import sys
    import time

    print(LOCKSTEP + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        start, end = map(int, line.split())
        began, cpu = time.perf_counter(), time.process_time()
        out = measure(start, end)
        out.update(seconds=time.perf_counter() - began, cpu_seconds=time.process_time() - cpu)
        print(LOCKSTEP + json.dumps(out), flush=True)


def serve_scorer(score, docs: int, length: int) -> None:
    """serve_lockstep for `score(query, documents)`: each request scores documents[START:END] of the same
    `docs` documents time_scorer would, warmed up on the first one."""
    from realshape import QUERY, documents

    texts = documents(docs, length)
    score(QUERY, texts[:1])
    serve_lockstep(lambda start, end: {"scores": [float(s) for s in score(QUERY, texts[start:end])]})
