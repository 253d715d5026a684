"""onnxruntime-genai's model builder as a CPU peer: int4 and fp32 ONNX models of the random real-shape reranker,
scored the way an onnxruntime-genai user would (og.Model + og.Generator, one pair at a time).

    .venv/bin/python benchmarks/bench_genai.py --build              # builds benchmarks/out/genai/{int4,fp32}
    .venv/bin/python benchmarks/bench_genai.py [--docs 100] [--length 200]   # prints the rows as JSON
    ~/.cache/rerank-export/venv-genai/bin/python benchmarks/bench_genai.py --worker DIR DOCS LENGTH  # one row

From the project venv, genai_rows(docs, length) returns the rows for bench_compare.py (each worker runs in the
genai venv, in its own process, and prints one JSON line with bench_compare.worker's keys).

What it does (everything under benchmarks/out/genai/, which git ignores):
1. --build runs `python -m onnxruntime_genai.models.builder` (in the genai venv) on the random-weight
   Qwen3-Reranker-0.6B-shape model (benchmarks/out/qwen3-reranker-0.6b-random, built by
   benchmarks/realshape.py:build_real_shape() in the project venv), once per precision, skipping a built one:
     int4: -p int4 -e cpu --extra_options accuracy_level=4 prune_lm_head=true
           (int4 RTN weights, block 32, symmetric: the builder's CPU defaults; accuracy_level=4, also the CPU
           default, quantizes the activations to int8 inside MatMulNBits, the int8-dot-product CPU kernel)
     fp32: -p fp32 -e cpu --extra_options prune_lm_head=true
   prune_lm_head=true is the builder's documented option for "only compute last-token logits during prefill",
   which is all a reranker reads; without it the graph computes 151,669 logits for every prompt token.
   Build seconds are written to benchmarks/out/genai/<precision>/build.json.
2. The worker loads the folder with og.Config + og.Model (intra_op_num_threads=2 through Config.overlay, no file
   edited), tokenizes with og.Tokenizer (the prompt's three parts encoded separately and joined, as the model
   card does), and per pair creates an og.Generator with max_length = prompt length + 1, append_tokens(prompt),
   get_logits() (the last position's logits), then p(yes) = sigmoid(logit["yes"] - logit["no"]): the model
   card's prompt and score. Warm-up on 1 document, then the timed DOCS documents; peak RSS above the loaded RSS
   (VmHWM after writing 5 to /proc/self/clear_refs), as bench_compare.worker measures it.
   One pair per generator: the documents differ in token length ("Document 7." vs "Document 42."), so a batch
   would be padded, and on CPU one ~270-token prompt already makes full-width GEMMs (batching was not tried).
   The row's cpu_seconds is the worker's CPU time while timed: up to 2 x seconds (2 threads); near 1 x seconds
   means other work shared the 2 cores and the row's pairs/s reads low.

Setting up a fresh machine (none of this is in the repository; nothing goes into the project venv):
    python3 -m venv ~/.cache/rerank-export/venv-genai
    ~/.cache/rerank-export/venv-genai/bin/pip install torch==2.13.0              # the CPU build on this disk first
    ~/.cache/rerank-export/venv-genai/bin/pip install onnxruntime-genai==0.18.0 onnxruntime==1.32.0 \
        onnx==1.23.2 onnx-ir==1.1.0 transformers==5.20.2 safetensors tqdm
    .venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); import realshape; realshape.build_real_shape()"
    .venv/bin/python benchmarks/bench_genai.py --build
Override the genai venv's python with GENAI_PYTHON=/path/to/python.
Random weights: speed and memory are real, scores are meaningless (they only check the plumbing against the
model card's code on the same prompts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _procstat import time_scorer
from realshape import (  # stdlib only at import: the genai venv runs this file too
    NO,
    PREFIX,
    SUFFIX,
    TASK,
    YES,
    run_worker,
)

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
OUT = ROOT / "benchmarks" / "out"
MODEL = OUT / "qwen3-reranker-0.6b-random"
WORK = OUT / "genai"
GENAI_PYTHON = Path(os.environ.get("GENAI_PYTHON",
                                   Path.home() / ".cache" / "rerank-export" / "venv-genai" / "bin" / "python"))
THREADS = 2

# What each precision is built with (besides -p PRECISION -e cpu); recorded in the row.
PRECISIONS = {
    "int4": ["accuracy_level=4", "prune_lm_head=true"],
    "fp32": ["prune_lm_head=true"],
}

# ---------------------------------------------------------------- build (project venv, shells out to the genai venv)

def build(precision: str, model: Path = MODEL) -> dict:
    """Run the model builder for one precision into WORK/precision (skipped when built); returns build.json."""
    dst = WORK / precision
    record = dst / "build.json"
    if record.is_file():
        return json.loads(record.read_text())
    if not (model / "model.safetensors").is_file():
        sys.exit(f"no model at {model}: build it with realshape.build_real_shape() (see {SCRIPT.name}'s docstring)")
    if not GENAI_PYTHON.is_file():
        sys.exit(f"no genai venv python at {GENAI_PYTHON}: see the set-up notes in {SCRIPT.name}'s docstring")
    tmp, cache = WORK / f"{precision}.tmp", WORK / f"{precision}.cache"
    shutil.rmtree(tmp, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    cmd = [str(GENAI_PYTHON), "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(tmp),
           "-p", precision, "-e", "cpu", "-c", str(cache), "--extra_options", *PRECISIONS[precision]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    if done.returncode != 0 or not (tmp / "genai_config.json").is_file():
        sys.exit(f"model builder failed for {precision} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    info = {"precision": precision, "build_seconds": seconds, "onnxruntime_genai": genai_version(),
            "command": " ".join(["python -m onnxruntime_genai.models.builder -i", str(model.relative_to(ROOT)),
                                 "-o", str(dst.relative_to(ROOT)), "-p", precision, "-e cpu --extra_options",
                                 *PRECISIONS[precision]]),
            "bytes": sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())}
    (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return info


def genai_version() -> str | None:
    done = subprocess.run([str(GENAI_PYTHON), "-c", "import onnxruntime_genai as og; print(og.__version__)"],
                          capture_output=True, text=True, check=False)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


# ---------------------------------------------------------------- worker (genai venv, its own process)

def _genai_scorer(folder: str):
    """og.Model + og.Tokenizer; one og.Generator per pair, the last position's logits -> p(yes)."""
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(folder)
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": THREADS, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    pre, suf = [list(tokenizer.encode(text)) for text in (PREFIX, SUFFIX)]

    def score(query: str, docs: list[str]) -> list[float]:
        out = []
        for doc in docs:
            ids = pre + list(tokenizer.encode(f"<Instruct>: {TASK}\n<Query>: {query}\n<Document>: {doc}")) + suf
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(ids) + 1, batch_size=1)
            generator = og.Generator(model, params)
            generator.append_tokens(np.asarray([ids], dtype=np.int32))
            logits = generator.get_logits()[0, -1]
            out.append(1.0 / (1.0 + math.exp(float(logits[NO]) - float(logits[YES]))))
            del generator
        return out

    score.prompt_ids = lambda query, doc: (
        pre + list(tokenizer.encode(f"<Instruct>: {TASK}\n<Query>: {query}\n<Document>: {doc}")) + suf)
    return score


def worker(folder: str, docs: int, length: int) -> dict:
    return {**time_scorer(_genai_scorer(folder), docs, length),
            "how": ("og.Model + og.Tokenizer, one og.Generator per pair (max_length = prompt + 1): append_tokens, "
                    f"get_logits at the last position, sigmoid(yes - no); {THREADS} intra-op threads")}


# ---------------------------------------------------------------- rows for bench_compare (project venv)

def genai_rows(docs: int, length: int = 200, timeout: float = 7200) -> dict[str, dict]:
    """{"onnxruntime-genai model builder int4 (CPU)": row, "... fp32 (CPU)": row}, each worker in the genai venv."""
    rows = {}
    for precision, options in PRECISIONS.items():
        name = f"onnxruntime-genai model builder {precision} (CPU)"
        record = WORK / precision / "build.json"
        if not GENAI_PYTHON.is_file():
            rows[name] = {"error": f"no genai venv at {GENAI_PYTHON}: see benchmarks/bench_genai.py's docstring"}
            continue
        if not record.is_file():
            rows[name] = {"error": "not built: run python benchmarks/bench_genai.py --build"}
            continue
        info = json.loads(record.read_text())
        row = run_worker(SCRIPT, [str(WORK / precision), str(docs), str(length)], timeout, str(GENAI_PYTHON))
        rows[name] = {**row, "build_seconds": info["build_seconds"], "onnxruntime_genai": info["onnxruntime_genai"],
                      "builder_options": f"-p {precision} -e cpu --extra_options {' '.join(options)}",
                      "bytes": info.get("bytes")}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("PRECISION_DIR", "DOCS", "LENGTH"))
    parser.add_argument("--build", action="store_true", help="build the int4 and fp32 models (skips built ones)")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--length", type=int, default=200)
    args = parser.parse_args()
    if args.worker:
        folder, docs, length = args.worker
        print(json.dumps(worker(folder, int(docs), int(length))))
        return
    if args.build:
        for precision in PRECISIONS:
            print(json.dumps(build(precision)))
        return
    print(json.dumps(genai_rows(args.docs, args.length), indent=1))


if __name__ == "__main__":
    main()
