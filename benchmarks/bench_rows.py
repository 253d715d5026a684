"""onnx-int8 before and after its graph ran each row alone (formats/onnx/rows.py), side by side in one run.

Both artifacts come from the same random 0.6B-shape weights: `--before` exported by the previous graph
(one activation scale over the whole padded batch), `--after` by this tree's (a Loop over the rows, real
tokens first). Each row runs in its own process, rounds alternate, and each reports pairs/s for one query
with N documents of ~200 tokens through rerank_export.load, with and without prefix reuse, and through a
plain onnxruntime session as the card says (batches of 8, padded left by the folder's tokenizer). The
plain rows also give how far a document's score moves between alone and in its batch.

    .venv/bin/python benchmarks/bench_rows.py --before DIR/onnx-int8 --after DIR/onnx-int8 \
        [--docs 30] [--rounds 3] [--lengths equal|mixed] [--same-process] [--results benchmarks/RESULTS.md]

--same-process loads both into one process and alternates rounds there (prefix reuse only), which takes
the noise of separate processes out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from realshape import QUERY, SENTENCE, run_worker, write_section

SCRIPT = Path(__file__).resolve()
KINDS = ("runtime", "runtime-noreuse", "plain")
PLAIN_BATCH = 8
# Document lengths in tokens: "equal" as bench_compare (a batch has next to no padding), "mixed" cycling
# through short and long ones (a padded batch computes pads, a row alone does not).
LENGTHS = {"equal": (200,), "mixed": (40, 80, 200, 400)}


def documents(n: int, lengths: str) -> list[str]:
    """n distinct documents of about the given Qwen token counts (the sentence is ~40 tokens)."""
    sizes = LENGTHS[lengths]
    return [f"Document {i}. " + SENTENCE * max(1, sizes[i % len(sizes)] // 40) for i in range(n)]


def runtime_worker(folder: str, docs: list[str], prefix_reuse: bool) -> dict:
    """rerank_export.load's scores of one query with `docs`, timed after a one-document warm-up."""
    import rerank_export

    reranker = rerank_export.load(folder, device="cpu", allow_unverified=True, prefix_reuse=prefix_reuse)
    reranker.score([(QUERY, docs[0])])
    start = time.perf_counter()
    reranker.score([(QUERY, d) for d in docs])
    seconds = time.perf_counter() - start
    return {"pairs_per_s": len(docs) / seconds, "seconds": seconds}


def plain_worker(folder: str, texts: list[str]) -> dict:
    """The card's path: default InferenceSession, the folder's tokenizer padding left, batches of 8."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from rerank_export.contract import prompt_text

    tokenizer = AutoTokenizer.from_pretrained(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(Path(folder) / "model.onnx"), options, providers=["CPUExecutionProvider"])
    texts = [prompt_text(QUERY, d) for d in texts]

    def logits(batch: list[str]) -> np.ndarray:
        enc = tokenizer(batch, padding=True, return_tensors="np")
        return session.run(["logit"], {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0]

    logits(texts[:1])  # warm-up
    start = time.perf_counter()
    batched = np.concatenate([logits(texts[i:i + PLAIN_BATCH]) for i in range(0, len(texts), PLAIN_BATCH)])
    seconds = time.perf_counter() - start
    alone = np.concatenate([logits([t]) for t in texts[:PLAIN_BATCH]])
    moved = np.abs(1 / (1 + np.exp(-batched[:PLAIN_BATCH])) - 1 / (1 + np.exp(-alone)))
    return {"pairs_per_s": len(texts) / seconds, "seconds": seconds, "batch_vs_alone_max_dp": float(moved.max())}


def worker(kind: str, folder: str, docs: int, lengths: str) -> dict:
    texts = documents(docs, lengths)
    if kind == "plain":
        return plain_worker(folder, texts)
    return runtime_worker(folder, texts, prefix_reuse=kind == "runtime")


def run(before: Path, after: Path, docs: int, rounds: int, lengths: str) -> dict:
    from rerank_export.host import cpu_facts, describe_cpu

    rows: dict[str, dict[str, list[dict]]] = {"before": {k: [] for k in KINDS}, "after": {k: [] for k in KINDS}}
    for r in range(rounds):
        order = (("before", before), ("after", after)) if r % 2 == 0 else (("after", after), ("before", before))
        for kind in KINDS:
            for label, folder in order:
                result = run_worker(SCRIPT, [kind, str(folder), str(docs), lengths])
                print(f"round {r + 1} {label:6} {kind:16} {json.dumps(result)[:160]}", file=sys.stderr)
                rows[label][kind].append(result)
    return {"docs": docs, "rounds": rounds, "lengths": lengths, "cpu": describe_cpu(cpu_facts()), "rows": rows,
            "date": time.strftime("%Y-%m-%d")}


def same_process(before: Path, after: Path, docs: int, rounds: int, lengths: str) -> dict:
    """Both artifacts loaded in this process, with prefix reuse, scored in alternating rounds: the
    difference between the graphs without the noise of separate processes (memory placement, caches)."""
    import rerank_export
    from rerank_export.host import cpu_facts, describe_cpu

    texts = documents(docs, lengths)
    loaded = {label: rerank_export.load(folder, device="cpu", allow_unverified=True)
              for label, folder in (("before", before), ("after", after))}
    speeds: dict[str, list[float]] = {"before": [], "after": []}
    for label, reranker in loaded.items():
        reranker.score([(QUERY, texts[0])])  # warm-up
    for r in range(rounds):
        for label in (("before", "after") if r % 2 == 0 else ("after", "before")):
            start = time.perf_counter()
            loaded[label].score([(QUERY, d) for d in texts])
            speeds[label].append(docs / (time.perf_counter() - start))
            print(f"same process, round {r + 1} {label:6} {speeds[label][-1]:.3f} pairs/s", file=sys.stderr)
    return {"docs": docs, "rounds": rounds, "lengths": lengths, "cpu": describe_cpu(cpu_facts()),
            "pairs_per_s": speeds, "date": time.strftime("%Y-%m-%d")}


def render_same_process(result: dict) -> str:
    speed = {label: statistics.median(v) for label, v in result["pairs_per_s"].items()}
    rounds = " ".join(f"{b:.3f}/{a:.3f}" for b, a in zip(result["pairs_per_s"]["before"],
                                                         result["pairs_per_s"]["after"]))
    return "\n".join([
        "### Both graphs in one process", "",
        (f"`python benchmarks/bench_rows.py --before ... --after ... --same-process --docs {result['docs']} "
         f"--rounds {result['rounds']} --results benchmarks/RESULTS.md`"), "",
        (f"CPU: {result['cpu']}. rerank_export.load with prefix reuse, one query, {result['docs']} documents "
         f"({result['lengths']} lengths), rounds alternating which graph goes first."), "",
        "| before: pairs/s | after: pairs/s | after / before | each round, before/after |", "|---:|---:|---:|---|",
        f"| {speed['before']:.3f} | {speed['after']:.3f} | {speed['after'] / speed['before']:.2f}x | {rounds} |",
        "", f"One run, {result['date']}.", ""])


def render(result: dict) -> str:
    sizes = "/".join(str(n) for n in LENGTHS[result["lengths"]])
    lines = [f"### {result['lengths']} document lengths", "",
             (f"`python benchmarks/bench_rows.py --before ... --after ... --docs {result['docs']} "
             f"--rounds {result['rounds']} --lengths {result['lengths']} --results benchmarks/RESULTS.md`"), "",
             (f"CPU: {result['cpu']}. One query, {result['docs']} documents of ~{sizes} tokens, 2 threads, each "
             f"cell the median of {result['rounds']} runs in fresh processes, rounds alternating."), "",
             "| path | before: pairs/s | after: pairs/s | after / before | plain batch vs alone, max abs dp (before / after) |",
             "|---|---:|---:|---:|---|"]
    names = {"runtime": "rerank_export.load, prefix reuse", "runtime-noreuse": "rerank_export.load, no reuse",
             "plain": f"plain onnxruntime, batches of {PLAIN_BATCH} padded left"}
    for kind in KINDS:
        speed = {label: _median(result["rows"][label][kind], "pairs_per_s") for label in ("before", "after")}
        dp = " / ".join(f"{_median(result['rows'][label][kind], 'batch_vs_alone_max_dp'):.3g}"
                        for label in ("before", "after")) if kind == "plain" else "-"
        lines.append(f"| {names[kind]} | {speed['before']:.3f} | {speed['after']:.3f} | "
                     f"{speed['after'] / speed['before']:.2f}x | {dp} |")
    return "\n".join(lines + ["", f"One run, {result['date']}."]) + "\n"


def _median(results: list[dict], key: str) -> float:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "FOLDER", "DOCS", "LENGTHS"))
    parser.add_argument("--before", type=Path)
    parser.add_argument("--after", type=Path)
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lengths", choices=sorted(LENGTHS), default="equal")
    parser.add_argument("--same-process", action="store_true", help="both graphs in this process, with reuse")
    parser.add_argument("--out", type=Path, help="JSON of every run (default benchmarks/rows-<lengths>.json)")
    parser.add_argument("--results", type=Path, help="RESULTS.md whose bench_rows section to replace")
    args = parser.parse_args()
    if args.worker:
        kind, folder, docs, lengths = args.worker
        print(json.dumps(worker(kind, folder, int(docs), lengths)))
        return
    if not (args.before and args.after):
        parser.error("--before and --after name the two onnx-int8 folders")
    if args.same_process:
        result = same_process(args.before, args.after, args.docs, args.rounds, args.lengths)
        print(render_same_process(result))
        if args.results:
            write_section(args.results, "bench_rows_same_process", render_same_process(result))
        return
    result = run(args.before, args.after, args.docs, args.rounds, args.lengths)
    (args.out or SCRIPT.parent / f"rows-{args.lengths}.json").write_text(json.dumps(result, indent=1))
    print(render(result))
    if args.results:
        write_section(args.results, f"bench_rows_{args.lengths}", render(result))


if __name__ == "__main__":
    main()
