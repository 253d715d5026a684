"""vLLM (CPU build) against rerank_export's own runtime, side by side in one run, on a random model of the
real Qwen3-Reranker-0.6B shape: pairs/s for one query with N documents of ~200 tokens, with and without
prefix reuse (vLLM's prefix caching / our shared-prefix KV reuse), and peak RSS.

    .venv/bin/python benchmarks/bench_vllm.py --vllm-python ~/.cache/rerank-export/venv-vllm/bin/python \
        [--docs 100] [--formats baseline-bf16 awq-int4] [--results benchmarks/RESULTS.md]

vLLM serves each artifact through the command `rerank-export serve --engine vllm` builds (a real server on
127.0.0.1, /v1/rerank over HTTP); its peak RSS is the sum over its processes (API server, engine core),
sampled while it scores. Our runtime runs in a fresh process (bench_compare.py's worker).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
from realshape import OUT, QUERY, ROOT, SCORES_KEPT, build_real_shape, documents, run_worker, write_section

from rerank_export.manifest import read_manifest
from rerank_export.vllm.engine import HOST, free_port, post

COMPARE = Path(__file__).resolve().parent / "bench_compare.py"
SAMPLE_SECONDS = 0.2


def export(model: Path, root: Path, formats: list[str]) -> None:
    from rerank_export.export import export_formats
    from rerank_export.reference import SourceModel

    missing = [f for f in formats if not (root / f / "manifest.json").is_file()]
    if missing:
        export_formats(str(model), None, root, missing, source=SourceModel(str(model)))


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


def vllm_row(folder: Path, python: str, docs: int, length: int, prefix_caching: bool,
             binding: str = "serve") -> dict:
    """One vLLM row; `binding` "serve": the thread binding `serve --engine vllm` sets (vllm/binding.py),
    "default": vLLM's own (VLLM_CPU_OMP_THREADS_BIND=auto, one core reserved)."""
    from rerank_export.host import device_facts
    from rerank_export.plan import traits_from_formats
    from rerank_export.select import choose_artifact
    from rerank_export.vllm.command import build_command, read_config, settings_from
    from rerank_export.vllm.server import VllmServer

    manifest, config, port = read_manifest(folder), read_config(folder), free_port()
    facts = device_facts("cpu", None)
    decision = choose_artifact([(str(folder), manifest)], facts, 2048, traits_from_formats(), True, ("torch",))
    extra = [] if prefix_caching else ["--no-enable-prefix-caching"]
    settings = settings_from(decision, config)
    if binding == "default":
        settings = replace(settings, cpu_binding=())
    command = build_command(folder, settings, config, manifest, HOST, port,
                            python=python, bf16=facts.cpu_bf16, extra=extra)
    with VllmServer(command, folder, HOST, port) as server:
        texts = documents(docs, length)
        post(f"{server.url}/v1/rerank", {"query": QUERY, "documents": texts[:1]})  # warm-up
        loaded, peak, done = tree_rss(server.process.pid), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(server.process.pid))
                time.sleep(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        results = post(f"{server.url}/v1/rerank", {"query": QUERY, "documents": texts})["results"]
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    scores = [r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])]
    return {"pairs_per_s": docs / seconds, "seconds": seconds, "loaded_mib": loaded / 2**20,
            "peak_mib": peak[0] / 2**20, "docs": len(results), "scores": scores[:SCORES_KEPT],
            "dtype": command.argv[command.argv.index("--dtype") + 1], "binding": dict(settings.cpu_binding)}


def runtime_row(folder: Path, docs: int, length: int, prefix_reuse: bool) -> dict:
    row = run_worker(COMPARE, ["runtime" if prefix_reuse else "runtime-noreuse", str(folder), str(docs), "8",
                               str(length)])
    if "error" not in row:
        row["peak_mib"] = row["loaded_mib"] + row["peak_above_loaded_mib"]
    return row


def render(rows: list[dict], command: str, cpu: str) -> str:
    about = (f"CPU: {cpu}. Random weights of the real 0.6B shape; one query, {rows[0]['docs_asked']} documents "
             "of ~200 tokens; peak RSS of the whole engine (vLLM: all its processes).")
    lines = ["## vLLM (CPU build) against rerank_export's runtime", "", f"`{command}`", "", about, "",
             "| engine | artifact | prefix reuse | pairs/s | loaded MiB | peak MiB |", "|---|---|---|---:|---:|---:|"]
    # vLLM rows name their thread binding: vLLM's default, or the one `serve --engine vllm` sets.
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['artifact']} | {r['prefix']} | error: {r['error']} | | |")
            continue
        lines.append(f"| {r['engine']} | {r['artifact']} | {r['prefix']} | {r['pairs_per_s']:.2f} | "
                     f"{r['loaded_mib']:.0f} | {r['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", required=True)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--formats", nargs="+", default=["baseline-bf16", "awq-int4"])
    parser.add_argument("--artifacts", type=Path, default=OUT / "artifacts")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--bindings", nargs="+", choices=["default", "serve"], default=["default", "serve"],
                        help="vLLM's thread binding: its own default, and/or the one serve --engine vllm sets")
    args = parser.parse_args()
    model = build_real_shape()
    export(model, args.artifacts, args.formats)
    rows = []
    for name in args.formats:
        folder = args.artifacts / name
        for prefix in (True, False):
            for engine in [*(f"vllm ({b} binding)" for b in args.bindings), "runtime"]:
                try:
                    row = vllm_row(folder, args.vllm_python, args.docs, args.length, prefix,
                                   engine.split("(")[1].split()[0]) if engine.startswith("vllm") \
                        else runtime_row(folder, args.docs, args.length, prefix)
                except Exception as exc:  # noqa: BLE001 (a row records its failure and the run goes on)
                    row = {"error": str(exc)[:200]}
                rows.append({**row, "engine": engine, "artifact": name, "prefix": "on" if prefix else "off",
                             "docs_asked": args.docs})
                print(json.dumps(rows[-1]), flush=True)
    from rerank_export.host import describe_cpu

    text = render(rows, "python benchmarks/bench_vllm.py " + " ".join(f"--formats {f}" for f in args.formats),
                  describe_cpu())
    print(text)
    if args.results:
        write_section(args.results, "bench_vllm", text)
    (ROOT / "benchmarks" / "vllm.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
