"""rerank-export against what users would pick instead, on a random model of the real 0.6B shape, CPU.

Measured side by side in one run, each in its own process (so peak RSS is its own):
  memory:     peak RSS above the loaded model for 8 pairs x 1024 tokens: the model card's transformers
              code (vocabulary-wide logits) against ours (last-token head)
  throughput: pairs/s for one query with N documents of ~200 tokens: the model card's code (fp32),
              sentence-transformers' CrossEncoder on the converted baseline, and every artifact through
              rerank_export.load (with and without shared-prefix reuse)
  bytes:      each artifact against the 16-bit baseline
  llama.cpp:  llama-cpp-python with Q8_0 / Q4_K_M, read from bench_llamacpp.py's last run (own venv)
  engines:    with --vllm-python, vLLM's CPU build serving baseline-bf16 and awq-int4 (bench_vllm.py's row);
              with --genai, onnxruntime-genai's model builder int4 / fp32 (bench_genai.py, own venv);
              with --openvino, OpenVINO at its default precision, with NNCF int8 weights, and with NNCF int8
              weights and activations (bench_openvino.py, own venv)
  limits:     the machine's int8, bf16 and fp32 GEMM peaks (cpu_limits.py), measured before and after the
              rows; each row's achieved ops/s as a share of the peak of the arithmetic it runs; and the
              fastest ONNX row's time by op type from onnxruntime's profiler
  lockstep:   the goal's rows again (the model card, baseline-bf16 with reuse, the fastest rerank-export row,
              OpenVINO's rows) and the peaks, all loaded at once and taking turns on chunks of the same
              documents (lockstep.py): this machine's speed drifts, and ratios need the rows in one state.
              The goals table reads these.

    .venv/bin/python benchmarks/bench_compare.py [--docs 100] [--limit baseline-bf16=20] \
        [--vllm-python ~/.cache/rerank-export/venv-vllm/bin/python] [--genai] [--openvino] [--engine-docs 30] \
        [--artifacts benchmarks/out/artifacts] [--results benchmarks/RESULTS.md] [--lockstep-chunk 10]
    .venv/bin/python benchmarks/bench_compare.py --lockstep-only [--openvino] --results benchmarks/RESULTS.md

Artifacts are built by benchmarks/bench_formats.py (or here with --export); the runtime loads them with
allow_unverified=True because random weights are not worth gating. Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cpu_limits
from lockstep import Lane, pairs_per_s, round_ratios, run_lockstep
from realshape import OUT, QUERY, ROOT, SCORES_KEPT, build_real_shape, documents, run_worker, write_section

from rerank_export.formats import get_format
from rerank_export.manifest import read_manifest

SCRIPT = Path(__file__).resolve()
BF16_REUSE = "rerank-export baseline-bf16 (prefix reuse)"  # the issue's yardstick for the fastest CPU path
MODEL_CARD = "model-card (fp32, batch 8)"
PEAKS_LANE = "GEMM peaks"
OWN_LANES = 2  # rerank-export rows in the lockstep pass: the sequential pass's fastest two
VLLM_FORMATS = ("baseline-bf16", "awq-int4")  # what vLLM loads (ONNX is not its format)
# ---------------------------------------------------------------- workers (run in their own process)

def _model_card_scorer(model_dir: str, batch: int, device: str = "cpu", dtype: Any = None):
    """The Qwen3-Reranker model card's transformers code, verbatim in substance (fp32 unless told, full
    logits); on a GPU the card loads it in fp16 or bf16 (`dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32).to(device).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
              "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    pre, suf = tokenizer.encode(prefix, add_special_tokens=False), tokenizer.encode(suffix, add_special_tokens=False)
    task = "Given a web search query, retrieve relevant passages that answer the query"

    @torch.no_grad()
    def score(query: str, docs: list[str]) -> list[float]:
        out = []
        for i in range(0, len(docs), batch):
            pairs = [f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {d}" for d in docs[i:i + batch]]
            inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                               max_length=8192 - len(pre) - len(suf))
            inputs["input_ids"] = [pre + ids + suf for ids in inputs["input_ids"]]
            inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=8192).to(device)
            logits = model(**inputs).logits[:, -1, :]
            pair = torch.nn.functional.log_softmax(torch.stack([logits[:, no], logits[:, yes]], dim=1), dim=1)
            out += pair[:, 1].exp().tolist()
        return out

    return score


def _cross_encoder_scorer(folder: str, batch: int):
    """sentence-transformers' CrossEncoder on the artifact as it is: the artifact's chat template (the
    contract's prompt over query/document roles) is what makes CrossEncoder render the right prompt."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(folder, device="cpu", max_length=8192)
    return lambda query, docs: [float(x) for x in model.predict([(query, d) for d in docs], batch_size=batch)]


def _runtime_scorer(folder: str, prefix_reuse: bool):
    import rerank_export
    from rerank_export.prefix import PrefixReuseBackend

    reranker = rerank_export.load(folder, device="cpu", allow_unverified=True, prefix_reuse=prefix_reuse)

    def score(query: str, docs: list[str]) -> list[float]:
        return reranker.score([(query, d) for d in docs])

    # reported with the row: the PyTorch wrapper, or an ONNX backend that reuses prefixes itself
    score.prefix_reuse = isinstance(reranker.backend, PrefixReuseBackend) or getattr(reranker.backend, "prefix_reuse", False)
    return score


def scorer(kind: str, target: str, batch: int):
    """A worker's `score(query, documents)`, 2 threads."""
    import torch

    torch.set_num_threads(2)
    makers = {"model-card": lambda: _model_card_scorer(target, batch),
              "cross-encoder": lambda: _cross_encoder_scorer(target, batch),
              "runtime": lambda: _runtime_scorer(target, True),
              "runtime-noreuse": lambda: _runtime_scorer(target, False)}
    return makers[kind]()


def worker(kind: str, target: str, docs: int, batch: int, length: int) -> dict:
    from rerank_export.memory import peak_rss_bytes, reset_peak_rss, rss_bytes

    score = scorer(kind, target, batch)
    texts = documents(docs, length)
    score(QUERY, texts[:1])  # warm-up outside the measurement
    reset_peak_rss()
    loaded = rss_bytes()
    start = time.perf_counter()
    scores = score(QUERY, texts)
    seconds = time.perf_counter() - start
    return {"pairs_per_s": docs / seconds, "seconds": seconds, "loaded_mib": loaded / 2**20,
            "peak_above_loaded_mib": (peak_rss_bytes() - loaded) / 2**20, "docs": len(scores),
            "prefix_reuse": getattr(score, "prefix_reuse", False), "scores": scores[:SCORES_KEPT]}


# ---------------------------------------------------------------- driver

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=5, metavar=("KIND", "TARGET", "DOCS", "BATCH", "LENGTH"))
    parser.add_argument("--lockstep", action="store_true", help="with --worker: serve chunks (lockstep.py)")
    parser.add_argument("--lockstep-chunk", type=int, default=10,
                        help="documents per lockstep turn (0: no lockstep pass)")
    parser.add_argument("--lockstep-only", action="store_true",
                        help="measure only the lockstep pass; the other tables are --out's last numbers")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--limit", action="append", default=[], metavar="ARTIFACT=N",
                        help="score only N documents through this artifact (for formats far too slow here)")
    parser.add_argument("--artifacts", type=Path, default=OUT / "artifacts")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "compare.json")
    parser.add_argument("--results", type=Path, help="RESULTS.md whose bench_compare section to replace")
    parser.add_argument("--vllm-python", help="vLLM's CPU build (scripts/vllm-venv.sh): add its rows, served "
                        "as `rerank-export serve --engine vllm` would, for baseline-bf16 and awq-int4")
    parser.add_argument("--genai", action="store_true",
                        help="add onnxruntime-genai's model-builder rows (benchmarks/bench_genai.py, own venv)")
    parser.add_argument("--openvino", action="store_true",
                        help="add OpenVINO's rows (benchmarks/bench_openvino.py, own venv)")
    parser.add_argument("--profile-docs", type=int, default=20,
                        help="documents for the op-type profile of the fastest ONNX row (0: no profile)")
    parser.add_argument("--engine-docs", type=int, help="documents for the vLLM and genai rows (default: --docs)")
    parser.add_argument("--rerender", action="store_true",
                        help="measure nothing: re-read llama.cpp's results into --out's numbers and rewrite")
    args = parser.parse_args()
    if args.worker:
        kind, target, docs, batch, length = args.worker
        if args.lockstep:
            from _procstat import serve_scorer

            serve_scorer(scorer(kind, target, int(batch)), int(docs), int(length))
        else:
            print(json.dumps(worker(kind, target, int(docs), int(batch), int(length))))
        return
    if args.lockstep_only:
        results = json.loads(args.out.read_text())
    elif args.rerender:  # llama.cpp runs in its own venv, after (or before) the rest
        results = {**json.loads(args.out.read_text()), "llama_cpp": llama_cpp_row()}
        if "before" in results.get("limits", {}):  # the shares again, from the recorded peaks
            limits = results["limits"]
            results["limits"] = limit_rows(build_real_shape(), results["throughput"], limits["before"], limits["after"])
    else:
        from rerank_export.host import describe_cpu

        model = build_real_shape()
        before = run_worker(cpu_limits.SCRIPT, ["peaks"])
        results = {"cpu": describe_cpu(), "memory": memory_rows(model, args.artifacts),
                   "throughput": throughput_rows(model, args),
                   "bytes": byte_rows(args.artifacts), "llama_cpp": llama_cpp_row(), "docs": args.docs,
                   "command": "python benchmarks/bench_compare.py " + " ".join(sys.argv[1:])}
        results["limits"] = limit_rows(model, results["throughput"], before, run_worker(cpu_limits.SCRIPT, ["peaks"]))
        results["profile"] = profile_row(results["throughput"], args)
    if args.lockstep_only or (args.lockstep_chunk and not args.rerender):
        results["lockstep"] = lockstep_rows(build_real_shape(), results["throughput"], args)
    args.out.write_text(json.dumps(results, indent=1))
    plot(results, args.out.with_suffix(".png"))
    section = render(results, results.get("command", "python benchmarks/bench_compare.py"))
    print(section)
    if args.results:
        write_section(args.results, "bench_compare", section)


def memory_rows(model: Path, artifacts: Path) -> dict:
    """8 pairs x 1024 tokens in one batch: full-vocabulary logits against the last-token head."""
    rows = {"model-card (fp32, full logits)": run_worker(SCRIPT, ["model-card", str(model), "8", "8", "1024"])}
    fp32 = artifacts / "baseline-fp32"
    if fp32.is_dir():
        rows["rerank-export baseline-fp32"] = run_worker(SCRIPT, ["runtime-noreuse", str(fp32), "8", "8", "1024"])
    return rows


def throughput_rows(model: Path, args: argparse.Namespace) -> dict:
    limits = {name: int(n) for name, n in (item.split("=", 1) for item in args.limit)}
    n = str(args.docs)
    rows = {MODEL_CARD: run_worker(SCRIPT, ["model-card", str(model), n, "8", "200"])}
    base = args.artifacts / "baseline-fp32"
    if base.is_dir():
        rows["sentence-transformers CrossEncoder (baseline-fp32)"] = run_worker(
            SCRIPT, ["cross-encoder", str(base), n, "8", "200"])
    for folder in sorted(p for p in args.artifacts.iterdir() if (p / "manifest.json").is_file()):
        if "cpu" not in get_format(read_manifest(folder).format).devices:  # onnx-fp16: fp16 pays off on CUDA
            rows[f"rerank-export {folder.name}"] = {"error": "not run: a CUDA-only format"}
            continue
        docs = str(limits.get(folder.name, args.docs))
        row = run_worker(SCRIPT, ["runtime", str(folder), docs, "0", "200"])
        if not row.get("prefix_reuse"):  # reuse does not apply: the no-reuse run would be the same
            rows[f"rerank-export {folder.name}"] = row
            continue
        rows[f"rerank-export {folder.name} (prefix reuse)"] = row
        rows[f"rerank-export {folder.name} (no prefix reuse)"] = run_worker(
            SCRIPT, ["runtime-noreuse", str(folder), docs, "0", "200"])
    rows.update(engine_rows(args))
    reference = rows[MODEL_CARD].get("scores")
    for row in rows.values():  # same prompts in, same p(yes) out (up to the format's precision)
        if reference and row.get("scores"):
            row["max_abs_diff_vs_model_card"] = max(abs(a - b) for a, b in zip(row["scores"], reference))
    return rows


def engine_rows(args: argparse.Namespace) -> dict:
    """Other engines on the same weights and pairs: vLLM's CPU build, onnxruntime-genai's model builder."""
    rows, docs = {}, args.engine_docs or args.docs
    if args.vllm_python:
        from bench_vllm import vllm_row

        for name in VLLM_FORMATS:
            folder = args.artifacts / name
            if not (folder / "manifest.json").is_file():
                continue
            # Both ways: vLLM's own thread binding, and the one `serve --engine vllm` sets (vllm/binding.py).
            for binding in ("default", "serve"):
                try:
                    row = vllm_row(folder, args.vllm_python, docs, 200, prefix_caching=True, binding=binding)
                    row["peak_above_loaded_mib"] = row["peak_mib"] - row["loaded_mib"]
                except Exception as exc:  # noqa: BLE001 (a row records its failure and the run goes on)
                    row = {"error": str(exc)[:200]}
                rows[f"vLLM CPU {name} ({binding} binding, prefix caching, /v1/rerank, all its processes)"] = row
    if args.genai:
        from bench_genai import genai_rows

        rows.update(genai_rows(docs, 200))
    if args.openvino:
        from bench_openvino import openvino_rows

        rows.update(openvino_rows(docs, 200))
    return rows


def compute_kind(name: str, row: dict) -> str | None:
    """The arithmetic a row's GEMMs run: int8 (int8 activations x int8 weights), bf16 or fp32 (None: unknown)."""
    int8 = ("onnx-int8", "onnx-int4", "genai model builder int4", "llama.cpp", "OpenVINO int8-static")
    if any(marker in name for marker in int8):
        return "int8"  # DynamicQuantizeMatMul; MatMulNBits at accuracy level 4; q8 dot products; NNCF's int8
    if name.startswith("OpenVINO"):  # its CPU plugin's own precision (int8 weights are widened to it)
        return "bf16" if "bf" in str(row.get("inference_precision", "")) else "fp32"
    if "bf16" in name:
        return "bf16"
    if "awq-int4" in name and "vLLM" in name:
        return None  # vLLM's CPU AWQ kernel: not one of the measured peaks
    return "fp32"  # the model card, CrossEncoder, fp32 formats, awq-int4's dequantized fp32 matmuls


def ops_counter(model: Path):
    """`ops(docs, reuse)`: the useful ops of scoring `docs` (realshape's documents) with or without the
    shared prefix run once (cpu_limits.run_ops, from the model's config and its prompts' lengths)."""
    from rerank_export.contract import Contract, load_tokenizer

    config = json.loads((model / "config.json").read_text())
    contract = Contract(load_tokenizer(model))
    marker = contract.document_marker_ids

    def prompt(doc: str) -> tuple[int, int]:  # (length, tokens up to and with the document marker)
        ids = contract.encode(QUERY, doc).input_ids
        return len(ids), next(i + len(marker) for i in range(len(ids)) if ids[i:i + len(marker)] == marker)

    def ops(docs: list[str], reuse: bool, with_prefix: bool = True) -> float:
        lengths, prefixes = zip(*(prompt(d) for d in docs))
        return cpu_limits.run_ops(config, list(lengths), min(prefixes), reuse, with_prefix)

    ops.per_token = cpu_limits.ops_per_token(config, 0)
    return ops


def reuses(name: str, row: dict) -> bool:
    return bool(row.get("prefix_reuse")) or "prefix caching" in name


def limit_rows(model: Path, speed: dict, before: dict, after: dict) -> dict:
    """The peaks (the higher of before and after the rows), and each row's achieved ops/s and share of its peak."""
    if "error" in before or "error" in after:
        return {"error": before.get("error") or after.get("error")}
    peaks = {k: max(before["peaks"][k]["peak_ops_per_s"], after["peaks"][k]["peak_ops_per_s"]) for k in before["peaks"]}
    ops = ops_counter(model)
    rows = {}
    for name, row in speed.items():
        kind = compute_kind(name, row)
        if not row.get("pairs_per_s") or not row.get("docs") or kind is None:
            continue
        achieved = ops(documents(row["docs"]), reuses(name, row)) * row["pairs_per_s"] / row["docs"]
        rows[name] = {"kind": kind, "ops_per_s": achieved, "share_of_peak": achieved / peaks[kind]}
    return {"peaks": peaks, "before": before, "after": after, "rows": rows, "ops_per_token": ops.per_token}


def lockstep_lanes(model: Path, speed: dict, args: argparse.Namespace) -> list[Lane]:
    """The goal's rows: the model card, baseline-bf16 with reuse, the two fastest rerank-export rows (from
    the sequential pass, where one drift flip can swap neighbours; the goals take the faster in lockstep),
    every OpenVINO variant, and the GEMM peaks."""
    def runtime(name: str) -> list[str]:  # "rerank-export onnx-int8 (prefix reuse)" -> its worker
        kind = "runtime-noreuse" if "no prefix reuse" in name else "runtime"
        return _worker_argv(kind, args.artifacts / name.split()[1], args.docs, 0)

    lanes = [Lane(PEAKS_LANE, [sys.executable, str(cpu_limits.SCRIPT), "--worker", "peaks-lockstep"]),
             Lane(MODEL_CARD, _worker_argv("model-card", model, args.docs, 8))]
    names = [BF16_REUSE] if (args.artifacts / "baseline-bf16" / "manifest.json").is_file() else []
    names += [name for name, _ in fastest_own_rows(speed)[:OWN_LANES] if name not in names]
    lanes += [Lane(name, runtime(name)) for name in names]
    if args.openvino:
        from bench_openvino import openvino_lanes

        lanes += openvino_lanes(args.docs)
    return lanes


def _worker_argv(kind: str, target: Path, docs: int, batch: int) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", kind, str(target), str(docs), str(batch), "200", "--lockstep"]


def lockstep_rows(model: Path, speed: dict, args: argparse.Namespace) -> dict:
    """The lockstep pass (lockstep.py): each lane's turns, pairs/s, useful ops/s, and its share of the peak
    measured in each round (that round's peak; overall, the mean of the rounds' peaks)."""
    lanes = run_lockstep(lockstep_lanes(model, speed, args), args.docs, args.lockstep_chunk)
    peaks = [r["peaks"] for r in lanes.pop(PEAKS_LANE)["rounds"]]
    if not peaks:
        return {"error": "the peaks worker did not answer"}
    ops, texts = ops_counter(model), documents(args.docs)
    rows = {}
    for name, lane in lanes.items():
        rounds = lane["rounds"]
        if not rounds:
            rows[name] = {"error": lane.get("error", "no turns")}
            continue
        kind = compute_kind(name, speed.get(name, {}))  # OpenVINO's precision, as its sequential row found it
        # with reuse the prefix counts once, in the first turn (a later turn finds it cached, or in the
        # PyTorch backend runs it again uncounted: the share is never overstated)
        done = [ops(texts[r["start"]:r["end"]], reuses(name, speed.get(name, {})), i == 0) for i, r in enumerate(rounds)]
        mean_peak = sum(p[kind]["peak_ops_per_s"] for p in peaks) / len(peaks)
        shares = [o / r["seconds"] / p[kind]["peak_ops_per_s"] for o, r, p in zip(done, rounds, peaks)]
        seconds = sum(r["seconds"] for r in rounds)
        rows[name] = {"kind": kind, "rounds": rounds, "docs": sum(r["end"] - r["start"] for r in rounds),
                      "pairs_per_s": pairs_per_s(rounds), "ops_per_s": sum(done) / seconds,
                      "share_of_peak": sum(done) / seconds / mean_peak, "round_shares": shares,
                      **({"error": lane["error"]} if "error" in lane else {})}
    return {"chunk": args.lockstep_chunk, "peaks": peaks, "rows": rows}


def profile_row(speed: dict, args: argparse.Namespace) -> dict:
    """onnxruntime's profile of the fastest ONNX row's artifact (prefix reuse on, as the runtime loads it)."""
    onnx = {n: r for n, r in speed.items() if n.startswith("rerank-export onnx-") and "pairs_per_s" in r
            and "no prefix reuse" not in n}
    if not onnx or not args.profile_docs:
        return {"error": "no ONNX row to profile"}
    name = max(onnx, key=lambda n: onnx[n]["pairs_per_s"])
    folder = args.artifacts / name.split()[1]
    return {"row": name, **run_worker(cpu_limits.SCRIPT, ["profile", str(folder), str(args.profile_docs)])}


def byte_rows(artifacts: Path) -> dict:
    sizes = {p.name: sum(f["bytes"] for f in json.loads((p / "manifest.json").read_text())["files"].values())
             for p in sorted(artifacts.iterdir()) if (p / "manifest.json").is_file()}
    base = sizes.get("baseline-fp16") or sizes.get("baseline-bf16")
    return {name: {"bytes": b, "ratio_to_16bit_baseline": (b / base) if base else None} for name, b in sizes.items()}


def plot(results: dict, path: Path) -> None:
    """Two bar charts: pairs/s per method, and peak memory above the loaded model for 8 x 1024 tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = {k + (f" ({v['docs']} docs)" if v["docs"] != results["docs"] else ""): v["pairs_per_s"]
             for k, v in results["throughput"].items() if "pairs_per_s" in v}
    for name, row in (results["llama_cpp"].get("formats") or {}).items():
        speed[f"llama.cpp {name} ({row['docs']} docs)"] = row["pairs_per_s"]
    memory = {k: v["peak_above_loaded_mib"] for k, v in results["memory"].items() if "peak_above_loaded_mib" in v}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 2 + 0.35 * (len(speed) + len(memory))), dpi=100,
                                   gridspec_kw={"height_ratios": [max(1, len(speed)), max(1, len(memory))]})
    ax1.barh(list(speed), list(speed.values()), color="tab:blue")
    ax1.set_xlabel(f"pairs/s, one query x {results['docs']} documents of ~200 tokens (CPU, 2 threads)")
    ax2.barh(list(memory), list(memory.values()), color="tab:orange")
    ax2.set_xlabel("peak RSS above the loaded model, 8 pairs x 1024 tokens (MiB)")
    for ax in (ax1, ax2):
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle("Random-weight Qwen3-Reranker-0.6B shape, CPU")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render(results: dict, command: str) -> str:
    """The RESULTS.md section: memory, throughput and bytes tables, straight from the measured rows."""
    intro = (f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}; each row in its own process, 2 "
             "threads). Raw numbers: `benchmarks/compare.json`; plot: [`compare.png`](compare.png).\n\n"
             f"CPU: {results.get('cpu', 'not recorded')}.")
    lines = [intro, "", "![pairs/s and peak memory](compare.png)", ""]
    lines += _memory_table(results["memory"]) + [""] + _speed_table(results) + [""] + _bytes_table(results)
    if "limits" in results:
        lines += [""] + _limits_table(results["limits"]) + [""] + _profile_table(results.get("profile", {}))
        lines += [""] + _lockstep_table(results) + [""] + _goals_table(results)
    return "\n".join(lines) + "\n"


def _memory_table(memory: dict) -> list[str]:
    lines = ["Peak RSS above the loaded model, one batch of 8 pairs x 1024 tokens:", "",
             "| scorer | peak above loaded MiB | loaded RSS MiB |", "|---|---:|---:|"]
    for name, row in memory.items():
        lines.append(f"| {name} | {_cell(row, 'peak_above_loaded_mib', ',.0f')} | "
                     f"{_cell(row, 'loaded_mib', ',.0f')} |")
    return lines


def _speed_table(results: dict) -> list[str]:
    speed, llama = results["throughput"], results["llama_cpp"]
    card = speed.get("model-card (fp32, batch 8)", {}).get("pairs_per_s")
    bf16 = speed.get(BF16_REUSE, {}).get("pairs_per_s")

    def ratio(pairs_per_s: float | None, base: float | None) -> str:
        return f"{pairs_per_s / base:.2f}x" if pairs_per_s and base else "-"

    lines = [(f"One query, {results['docs']} documents of ~200 tokens (~270 with the prompt). The max abs dp "
             "column compares each row's first scores with the model card's on the same pairs:"), "",
             ("| scorer | docs | pairs/s | vs model card | vs bf16 reuse | G ops/s | share of peak | loaded MiB | "
              "peak above loaded MiB | max abs dp |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    achieved = results.get("limits", {}).get("rows", {})
    for name, row in speed.items():
        pairs, ops = row.get("pairs_per_s"), achieved.get(name)
        gops, share = (f"{ops['ops_per_s'] / 1e9:.0f}", f"{ops['share_of_peak']:.0%} of {ops['kind']}") if ops else ("-", "-")
        lines.append(f"| {name} | {row.get('docs', '-')} | {_cell(row, 'pairs_per_s', '.3f')} | "
                     f"{ratio(pairs, card)} | {ratio(pairs, bf16)} | {gops} | {share} | "
                     f"{_cell(row, 'loaded_mib', ',.0f')} | {_cell(row, 'peak_above_loaded_mib', ',.0f')} | "
                     f"{_cell(row, 'max_abs_diff_vs_model_card', '.1e')} |")
    version = llama.get("llama_cpp_python", "?")
    for name, row in (llama.get("formats") or {}).items():
        lines.append(f"| llama.cpp {name} (llama-cpp-python {version}, own venv, an earlier run) | {row['docs']} | "
                     f"{row['pairs_per_s']:.3f} | {ratio(row['pairs_per_s'], card)} | "
                     f"{ratio(row['pairs_per_s'], bf16)} | - | - | {row['load_rss'] / 2**20:,.0f} | "
                     f"{(row['peak_rss'] - row['load_rss']) / 2**20:,.0f} | - |")
    if "error" in llama:
        lines.append(f"| llama.cpp | - | not measured: {llama['error']} | - | - | - | - | - | - | - |")
    return lines


def _limits_table(limits: dict) -> list[str]:
    if "error" in limits:
        return [f"GEMM peaks: not measured ({limits['error']})."]
    lines = [(f"The machine's GEMM peaks, 2 threads, {cpu_limits.TOKENS} tokens x K x N (benchmarks/cpu_limits.py), "
             "measured before and after the rows above (the higher is the peak). Useful ops per token through "
             f"the decoder's linear layers: {limits['ops_per_token'] / 1e9:.2f} G (plus attention)."), "",
             "| arithmetic | peak G ops/s | " + " | ".join(f"{s} before / after" for s in
                                                            limits["before"]["peaks"]["int8"]["per_shape"]) + " |",
             "|---|---:|" + "---:|" * len(limits["before"]["peaks"]["int8"]["per_shape"])]
    for kind, peak in limits["peaks"].items():
        before, after = limits["before"]["peaks"][kind]["per_shape"], limits["after"]["peaks"][kind]["per_shape"]
        lines.append(f"| {kind} | {peak / 1e9:.0f} | " + " | ".join(
            f"{before[s] / 1e9:.0f} / {after[s] / 1e9:.0f}" for s in before) + " |")
    return lines


def _profile_table(profile: dict) -> list[str]:
    if "share" not in profile:
        return [f"Profile: not measured ({profile.get('error', 'no row')})."]
    share, top = profile["share"], profile["top_ops"]
    speed = f", {profile['docs'] / profile['seconds']:.2f} pairs/s while profiled" if profile.get("seconds") else ""
    return [(f"Where {profile['row']} spends its time: onnxruntime's profiler over {profile['docs']} documents "
            f"(shares of the session's run time; the profiler's own overhead included{speed}):"), "",
            "| GEMM | attention | quantize / dequantize | other ops | outside ops |", "|---:|---:|---:|---:|---:|",
            "| " + " | ".join(f"{share.get(k, 0):.0%}" for k in ("gemm", "attention", "quantize", "other ops",
                                                                  "outside ops")) + " |", "",
            "Top op types: " + ", ".join(f"{op} {v:.0%}" for op, v in top.items()) + "."]


def fastest_own_rows(speed: dict) -> list[tuple[str, float]]:
    """rerank-export's rows (any format, prefix reuse allowed), fastest first."""
    own = {n: r["pairs_per_s"] for n, r in speed.items() if n.startswith("rerank-export") and r.get("pairs_per_s")}
    return sorted(own.items(), key=lambda kv: -kv[1])


def best_own_row(speed: dict) -> tuple[str, float] | None:
    """The fastest rerank-export row."""
    return next(iter(fastest_own_rows(speed)), None)


GOALS = (("OpenVINO's best row", 1.3), ("baseline-bf16 with reuse", 2.0), ("the model card's code", 6.0))


def _goals_table(results: dict) -> list[str]:
    """The fastest rerank-export row against the goals: from the lockstep pass where there is one."""
    lockstep = results.get("lockstep", {}).get("rows")
    speed, shares = (lockstep, lockstep) if lockstep else (results["throughput"], results["limits"].get("rows", {}))
    best = best_own_row(speed)
    if best is None:
        return []
    # OpenVINO the way its users run it: not our prefix-reuse prototype (bench_openvino's int8-static-reuse)
    openvino = {n: r for n, r in speed.items() if n.startswith("OpenVINO") and "prototype" not in n
                and r.get("pairs_per_s")}
    bases = {"OpenVINO's best row": max(openvino, key=lambda n: openvino[n]["pairs_per_s"], default=None),
             "baseline-bf16 with reuse": BF16_REUSE, "the model card's code": MODEL_CARD}
    where = (f"in lockstep, turns of {results['lockstep']['chunk']} documents" if lockstep
             else "one row after another")
    lines = [f"The fastest rerank-export row, {best[0]} ({best[1]:.3f} pairs/s, {where}), against the goals:", "",
             "| against | goal | measured | per turn, lowest / highest | best turns | met |", "|---|---:|---:|---:|---:|---|"]
    for label, goal in GOALS:
        base = speed.get(bases[label] or "", {})
        got = best[1] / base["pairs_per_s"] if base.get("pairs_per_s") else None
        turns = round_ratios(speed[best[0]]["rounds"], base["rounds"]) if lockstep and got else []
        spread = f"{min(turns):.2f}x / {max(turns):.2f}x" if turns else "-"
        quiet = f"{best_turn(speed[best[0]]['rounds']) / best_turn(base['rounds']):.2f}x" if turns else "-"
        lines.append(f"| {label} | {goal:.1f}x | {f'{got:.2f}x' if got else '-'} | {spread} | {quiet} | "
                     f"{'yes' if got and got >= goal else 'no'} |")
    row = shares.get(best[0], {})
    share, turns = row.get("share_of_peak"), row.get("round_shares", [])
    spread, quiet = (f"{min(turns):.0%} / {max(turns):.0%}", f"{max(turns):.0%}") if turns else ("-", "-")
    lines.append(f"| the measured {row.get('kind', '?')} GEMM peak | 65% | {f'{share:.0%}' if share else '-'} | "
                 f"{spread} | {quiet} | {'yes' if share and share >= 0.65 else 'no'} |")
    if lockstep:
        lines += ["", ("Measured is every turn together; a goal counts as met on that. Best turns divides each row's "
                       "fastest turn by the other's fastest (for the peak, the best turn's share): the machine "
                       "at its quietest, for each row on its own.")]
    return lines


def best_turn(rounds: list[dict]) -> float:
    """A lane's fastest turn, pairs/s."""
    return max((r["end"] - r["start"]) / r["seconds"] for r in rounds)


def _lockstep_table(results: dict) -> list[str]:
    """Each lane's pairs/s, ops/s and share of its rounds' peak."""
    lockstep = results.get("lockstep")
    if not lockstep:
        return []
    if "error" in lockstep:
        return [f"Lockstep pass: not measured ({lockstep['error']})."]
    peaks = lockstep["peaks"]
    int8 = [p["int8"]["peak_ops_per_s"] / 1e9 for p in peaks]
    lines = [(f"The goal's rows again, in lockstep (benchmarks/lockstep.py): every worker loaded at once, taking "
              f"turns on the same {lockstep['chunk']} documents at a time, and the GEMM peaks measured at each "
              f"of the {len(peaks)} turns (int8 peak lowest / highest: {min(int8):.0f} / {max(int8):.0f} G ops/s). "
              "Shares are of each turn's peak; the overall share is of the turns' mean peak:"), "",
             ("| scorer | docs | pairs/s | vs model card | G ops/s | share of peak | per turn, lowest / highest | "
              "best turn pairs/s |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    card = lockstep["rows"].get(MODEL_CARD, {}).get("pairs_per_s")
    for name, row in lockstep["rows"].items():
        if "pairs_per_s" not in row:
            lines.append(f"| {name} | - | failed: {row.get('error', '?')[:120]} | - | - | - | - | - |")
            continue
        turns = row["round_shares"]
        vs = f"{row['pairs_per_s'] / card:.2f}x" if card else "-"
        lines.append(f"| {name} | {row['docs']} | {row['pairs_per_s']:.3f} | {vs} | {row['ops_per_s'] / 1e9:.0f} | "
                     f"{row['share_of_peak']:.0%} of {row['kind']} | {min(turns):.0%} / {max(turns):.0%} | "
                     f"{best_turn(row['rounds']):.3f} |")
    return lines


def _bytes_table(results: dict) -> list[str]:
    sizes, llama = results["bytes"], results["llama_cpp"]
    lines = ["Artifact bytes against the 16-bit baseline:", "", "| artifact | bytes | ratio |", "|---|---:|---:|"]
    for name, row in sizes.items():
        ratio = row["ratio_to_16bit_baseline"]
        lines.append(f"| {name} | {row['bytes']:,} | {f'{ratio:.2f}x' if ratio else '-'} |")
    sixteen = next((r["bytes"] for r in sizes.values() if r["ratio_to_16bit_baseline"] == 1.0), None)
    for name, row in (llama.get("formats") or {}).items():
        ratio = f"{row['file_bytes'] / sixteen:.2f}x" if sixteen else "-"
        lines.append(f"| llama.cpp {name} GGUF | {row['file_bytes']:,} | {ratio} |")
    return lines


def _cell(row: dict, key: str, fmt: str) -> str:
    if "error" in row:
        error = row["error"]
        return ("" if error.startswith("not run") else "failed: ") + error[:120] if key == "pairs_per_s" else "-"
    return format(row[key], fmt) if isinstance(row.get(key), (int, float)) else "-"


def llama_cpp_row() -> dict:
    """llama.cpp runs in its own venv (benchmarks/bench_llamacpp.py); its last results are read here."""
    path = OUT / "llamacpp.json"
    if not path.is_file():
        return {"error": "no benchmarks/out/llamacpp.json: run benchmarks/bench_llamacpp.py (see its docstring)"}
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
