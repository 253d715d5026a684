"""onnxruntime session settings side by side: each setting in its own fresh process, in turn, for some
rounds. Each process loads the artifact through rerank_export.load with the setting applied to its session,
scores the same documents one call each (prefix reuse on) and prints its median ms per pair and every
call's, so a drift flip (lockstep.py says what it is) shows inside a process.

    .venv/bin/python benchmarks/session_threads.py benchmarks/out/artifacts/onnx-int8 [--docs 10] [--rounds 3]
    .venv/bin/python benchmarks/session_threads.py ARTIFACT --lockstep [--docs 100] [--chunk 2] [--settings ...]

--lockstep loads the settings at once, each in its own process, and they take turns on `--chunk`
documents at a time (lockstep.py), so every setting sees the same mix of the machine's states; it prints
each setting's pairs/s over every turn and the per-turn ratio to the first setting.

Settings: rerank-export's (onnxruntime's threads: one spinning thread per physical core; its memory arena,
no buffer reuse plan), 2 and 4 intra-op threads without spinning (more threads than cores let a fast core
take more of each op if the other is slowed), no memory arena, and onnxruntime's buffer reuse plan on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from cpu_limits import time_per_pair
from lockstep import Lane, pairs_per_s, round_ratios, run_lockstep
from realshape import run_worker

NO_SPIN = {"session.intra_op.allow_spinning": "0"}
# name: (intra-op threads, config entries, SessionOptions attributes)
SETTINGS: dict[str, tuple[int | None, dict[str, str], dict[str, bool]]] = {
    "rerank-export's": (None, {}, {}),
    "2 threads, no spinning": (2, NO_SPIN, {}),
    "4 threads, no spinning": (4, NO_SPIN, {}),
    "no memory arena": (None, {}, {"enable_cpu_mem_arena": False}),
    "buffer reuse plan on": (None, {}, {"enable_mem_reuse": True}),
}


def load(artifact: str, setting: str) -> object:
    """rerank_export.load(artifact) with `setting` applied to its onnxruntime session."""
    import rerank_export
    from rerank_export.formats.onnx import session

    threads, config, attributes = SETTINGS[setting]
    plain = session.session_options

    def options(_threads: int | None = None, optimization: str = "all") -> object:
        opts = plain(threads, optimization)
        for key, value in config.items():
            opts.add_session_config_entry(key, value)
        for name, value in attributes.items():
            setattr(opts, name, value)
        return opts

    session.session_options = options  # this process's only session
    return rerank_export.load(artifact, device="cpu", allow_unverified=True)


def worker(artifact: str, setting: str, docs: int) -> dict:
    return time_per_pair(load(artifact, setting), docs)


def lockstep_worker(artifact: str, setting: str, docs: int) -> None:
    from _procstat import serve_scorer

    reranker = load(artifact, setting)
    serve_scorer(lambda query, texts: reranker.score([(query, t) for t in texts]), docs, 200)


def lockstep(args: argparse.Namespace) -> None:
    script = str(Path(__file__).resolve())
    lanes = [Lane(s, [sys.executable, script, "--lockstep-worker", args.artifact, s, str(args.docs)])
             for s in args.settings]
    results = run_lockstep(lanes, args.docs, args.chunk)
    first = results[args.settings[0]]["rounds"]
    for setting in args.settings:
        result = results[setting]
        if "error" in result:
            print(f"{setting}: {result['error']}")
            continue
        ratios = sorted(round_ratios(result["rounds"], first))
        print(f"{setting}: {pairs_per_s(result['rounds']):.3f} pairs/s over every turn; per turn against "
              f"{args.settings[0]}: lowest {ratios[0]:.2f}x, median {ratios[len(ratios) // 2]:.2f}x, "
              f"highest {ratios[-1]:.2f}x")


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        import json

        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    if sys.argv[1:2] == ["--lockstep-worker"]:
        lockstep_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--docs", type=int, default=None, help="documents (default 10; 100 with --lockstep)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lockstep", action="store_true")
    parser.add_argument("--chunk", type=int, default=2, help="documents per turn with --lockstep")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    if args.lockstep:
        args.docs = args.docs or 100
        lockstep(args)
        return
    args.docs = args.docs or 10
    for round_ in range(1, args.rounds + 1):
        for setting in args.settings:
            row = run_worker(Path(__file__), [args.artifact, setting, str(args.docs)])
            shown = row.get("error") or (f"median {statistics.median(row['ms_per_pair']):.0f} ms per pair; "
                                         "each: " + " ".join(map(str, row["ms_per_pair"])))
            print(f"round {round_}, {setting}: {shown}", flush=True)


if __name__ == "__main__":
    main()
