"""The machine's limits beside bench_compare's rows: GEMM peaks measured in the same run, each row's achieved
ops/s as a share of the peak of the arithmetic it runs, and where onnxruntime spends a row's time by op type.

    .venv/bin/python benchmarks/cpu_limits.py --worker peaks [M]        # one JSON line: the GEMM peaks (M tokens)
    .venv/bin/python benchmarks/cpu_limits.py --worker profile DIR N    # one JSON line: time shares by op type
    .venv/bin/python benchmarks/cpu_limits.py --worker nodes [M]        # onnx-int8's fused int8 nodes, each alone
    .venv/bin/python benchmarks/cpu_limits.py --worker peaks-lockstep   # the peaks again at each lockstep turn
    .venv/bin/python benchmarks/cpu_limits.py --worker per-pair DIR N   # ms per pair, one at a time (the drift)

Peaks, 2 threads, the 0.6B shape's linear layers (M = 2,048 tokens by K x N = 1024 x 3072 (gate, up),
3072 x 1024 (down), 1024 x 2048 (q)), best of 5 after a warm-up:
  int8: onnxruntime MatMulInteger, uint8 activations x int8 weights (the kernel onnx-int8's
        DynamicQuantizeMatMul and onnx-int4's MatMulNBits with int8 activations run, VNNI where the CPU has it)
  bf16, fp32: torch.matmul
Achieved: the useful ops a row's run did, 2 x (the decoder's linear weights) per token run (0.88 G on the
0.6B shape) plus attention's 4 x layers x heads x head_dim x context per token, over its seconds. A row with
prefix reuse runs the shared prefix once and each pair's tail; one without runs every pair whole. The model
card's code also multiplies every position by the 151,669-row vocabulary head: wasted work, not counted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
THREADS = 2
TOKENS = 2048
SHAPES = ((1024, 3072), (3072, 1024), (1024, 2048))
GEMM = {"MatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "Gemm",
        "FusedMatMul", "QGemm"}
ATTENTION = {"GroupQueryAttention", "MultiHeadAttention", "Attention", "Softmax"}
QUANTIZE = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "GatherBlockQuantized"}
CONTROL = {"Loop", "If", "Scan"}  # their time is their subgraph's nodes', which are profiled themselves


def _best(run, repeats: int = 5) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _int8_peak(k: int, n: int, tokens: int = TOKENS) -> float:
    import numpy as np
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])], "peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [tokens, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [tokens, n])],
        [helper.make_tensor("b", TensorProto.INT8, [k, n], np.random.default_rng(0).integers(-64, 64, (k, n))
                            .astype(np.int8).tobytes(), raw=True),
         helper.make_tensor("az", TensorProto.UINT8, [], [128]), helper.make_tensor("bz", TensorProto.INT8, [], [0])])
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    a = np.random.default_rng(1).integers(0, 256, (tokens, k)).astype(np.uint8)
    return 2 * tokens * k * n / _best(lambda: session.run(["y"], {"a": a}))


def _session(model) -> object:
    """An onnxruntime CPU session over an in-memory model, THREADS intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def fused_node_rates(tokens: int = 210, k: int = 1024, n: int = 3072) -> dict:
    """G ops/s of onnx-int8's own nodes, each alone in a session at M = `tokens`: DynamicQuantizeMatMul, and
    DynamicQuantizeLinear + MatMulIntegerToFloat (what onnxruntime fuses a shared quantized input into)."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("b", TensorProto.INT8, [k, n], rng.integers(-64, 64, (k, n)).astype(np.int8).tobytes(),
                                raw=True),
             helper.make_tensor("bs", TensorProto.FLOAT, [n], (rng.random(n) * 0.01 + 0.005).tolist())]
    graphs = {"DynamicQuantizeMatMul": [helper.make_node("DynamicQuantizeMatMul", ["x", "b", "bs"], ["y"],
                                                         domain="com.microsoft")],
              "DynamicQuantizeLinear + MatMulIntegerToFloat": [
                  helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "qs", "qz"]),
                  helper.make_node("MatMulIntegerToFloat", ["q", "b", "qs", "bs", "qz"], ["y"], domain="com.microsoft")]}
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    rates = {}
    for name, nodes in graphs.items():
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [tokens, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [tokens, n])], inits)
        session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20),
                                                                   helper.make_opsetid("com.microsoft", 1)]))
        rates[name] = 2 * tokens * k * n / _best(lambda s=session: s.run(["y"], {"x": x})) / 1e9
    return {"tokens": tokens, "k": k, "n": n, "g_ops_per_s": rates}


def _torch_peak(k: int, n: int, dtype: str, tokens: int = TOKENS) -> float:
    import torch

    torch.set_num_threads(THREADS)
    a = torch.randn(tokens, k, dtype=getattr(torch, dtype))
    b = torch.randn(k, n, dtype=getattr(torch, dtype))
    with torch.inference_mode():
        return 2 * tokens * k * n / _best(lambda: torch.matmul(a, b))


def peaks(tokens: int = TOKENS) -> dict:
    """{"int8" | "bf16" | "fp32": {"peak_ops_per_s", "per_shape": {"KxN": ops/s}}} at M = `tokens`."""
    makers = {"int8": _int8_peak, "bf16": lambda k, n, m: _torch_peak(k, n, "bfloat16", m),
              "fp32": lambda k, n, m: _torch_peak(k, n, "float32", m)}
    out = {}
    for kind, make in makers.items():
        per_shape = {f"{k}x{n}": make(k, n, tokens) for k, n in SHAPES}
        out[kind] = {"peak_ops_per_s": max(per_shape.values()), "per_shape": per_shape}
    return {"threads": THREADS, "tokens": tokens, "peaks": out}


def ops_per_token(config: dict, context: float) -> float:
    """Useful ops of one token through the decoder: 2 x its linear weights, plus attention over `context`."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * config["intermediate_size"]
    return 2 * layers * per_layer + 4 * layers * heads * head_dim * context


def run_ops(config: dict, lengths: list[int], prefix: int, reuse: bool, with_prefix: bool = True) -> float:
    """Useful ops to score prompts of `lengths` tokens that share their first `prefix` tokens (with reuse,
    the prefix once, unless `with_prefix` is False: a later turn of a run whose prefix is cached)."""
    if not reuse:
        return sum(n * ops_per_token(config, n / 2) for n in lengths)
    tails = sum((n - prefix) * ops_per_token(config, (n + prefix) / 2) for n in lengths)
    return prefix * ops_per_token(config, prefix / 2) * with_prefix + tails


# ---------------------------------------------------------------- profile of one ONNX artifact's run

def profile(folder: str, docs: int) -> dict:
    """rerank_export.load's scoring of `docs` documents with onnxruntime's profiler on: time shares by op type."""
    import onnxruntime as ort
    from realshape import QUERY, documents

    import rerank_export
    from rerank_export.formats.onnx.session import MODEL_FILE, providers_for, session_options

    reranker = rerank_export.load(folder, device="cpu", allow_unverified=True)
    opts = session_options(THREADS)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path("/tmp") / f"rerank-export-profile-{Path(folder).name}")
    reranker.backend.session = ort.InferenceSession(str(Path(folder) / MODEL_FILE), opts,
                                                    providers=providers_for("cpu"))
    texts = documents(docs)
    start = time.perf_counter()
    reranker.score([(QUERY, d) for d in texts])
    seconds = time.perf_counter() - start
    trace = Path(reranker.backend.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return {"docs": docs, "seconds": seconds, **shares(events)}


def per_pair(folder: str, docs: int) -> dict:
    """rerank_export.load's scoring of `docs` documents one call each: ms per pair and the minor page faults
    each took. Run a few of these in a row to see this VM's drift (lockstep.py says what it is)."""
    import rerank_export

    return time_per_pair(rerank_export.load(folder, device="cpu", allow_unverified=True), docs)


def time_per_pair(reranker: object, docs: int) -> dict:
    """`reranker` scoring `docs` documents one call each, after a warm-up: ms per pair and minor page faults."""
    import resource

    from realshape import QUERY, documents

    texts = documents(docs)
    reranker.score([(QUERY, texts[0])])
    ms, faults = [], []
    for text in texts:
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        reranker.score([(QUERY, text)])
        ms.append(round((time.perf_counter() - start) * 1000))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"ms_per_pair": ms, "minor_faults": faults}


def shares(events: list[dict]) -> dict:
    """Node time by kind (GEMM, attention, quantize/dequantize, rest) as shares of the session's run time."""
    by_op: dict[str, float] = {}
    for e in events:
        op = (e.get("args") or {}).get("op_name")
        if e.get("cat") == "Node" and op and op not in CONTROL and e["name"].endswith("_kernel_time"):
            by_op[op] = by_op.get(op, 0.0) + e["dur"]
    run = sum(e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    kinds = {"gemm": GEMM, "attention": ATTENTION, "quantize": QUANTIZE}
    totals = {k: sum(v for op, v in by_op.items() if op in ops) for k, ops in kinds.items()}
    totals["other ops"] = sum(by_op.values()) - sum(totals.values())
    totals["outside ops"] = max(0.0, run - sum(by_op.values()))  # scheduling, copies, the Loop's own work
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    return {"run_us": run, "share": {k: v / run for k, v in totals.items()} if run else {},
            "top_ops": {op: us / run for op, us in top} if run else {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+", metavar="KIND [ARGS]")
    args = parser.parse_args()
    kind, *rest = args.worker
    if kind == "profile":
        print(json.dumps(profile(rest[0], int(rest[1]))))
    elif kind == "per-pair":
        print(json.dumps(per_pair(rest[0], int(rest[1]))))
    elif kind == "peaks-lockstep":  # one turn per lockstep round (benchmarks/lockstep.py)
        from _procstat import serve_lockstep

        serve_lockstep(lambda start, end: peaks())
    else:
        print(json.dumps((peaks if kind == "peaks" else fused_node_rates)(*map(int, rest))))


if __name__ == "__main__":
    main()
