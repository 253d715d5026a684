"""llama.cpp (llama-cpp-python) as the CPU peer: Q8_0 and Q4_K_M GGUFs of the random real-shape reranker.

    /tmp/llvenv/bin/python benchmarks/bench_llamacpp.py [--docs 100] [--batch 512] [--agree 6]

What it does (everything cached under benchmarks/out/llamacpp/, which git ignores):
1. Copies the random-weight Qwen3-Reranker-0.6B-shape model (benchmarks/out/qwen3-reranker-0.6b-random, built
   by benchmarks/realshape.py:build_real_shape() in the project venv) to llamacpp/src, symlinking the weights,
   and adds a README.md whose heading is "# Qwen3-Reranker": that is how llama.cpp's converter
   (conversion/qwen.py, Qwen3Model._is_qwen3_reranker) recognises a Qwen3 reranker. It then writes
   pooling_type=RANK, classifier labels ["yes", "no"], a "rerank" chat template, and a 2 x hidden `cls.output`
   tensor made of the tied embedding's "yes" and "no" rows. At run time llama.cpp takes the last token's hidden
   state, multiplies by cls.output and applies softmax, so the first output float is p(yes) =
   sigmoid(logit_yes - logit_no): the same number rerank-export's scoring returns.
2. Converts with convert_hf_to_gguf.py: --outtype q8_0 (Q8_0) and --outtype bf16 (lossless intermediate), then
   llama_cpp.llama_model_quantize(bf16 -> Q4_K_M) with llama_model_quantize_default_params().
3. Optionally (--agree K > 0, needs the project venv /work/main/.venv) checks agreement: the first K pairs
   scored by rerank-export's ReferenceBackend on the bf16 HF model against each GGUF; token ids compared too.
4. Per GGUF, in its own process: file bytes, RSS after load, RSS after one warm-up pair, pairs/s for one query
   with N documents (~200 tokens each, ~260 with the prompt), and peak RSS above the warmed-up RSS (VmHWM after
   writing 5 to /proc/self/clear_refs). 2 threads. Prints one JSON object, writes benchmarks/out/llamacpp.json.

Prompts are built by hand (the Qwen3-Reranker template, as in rerank_export.contract and as the GGUF's "rerank"
template) and tokenized with special=True, add_bos=False. Llama.embed() is NOT used: it tokenizes with
special=False (so "<|im_start|>" would become plain text) and reads n_embd floats where RANK pooling returns 2.
The scorer packs whole prompts into one llama_decode of at most --batch tokens (n_ctx = n_batch = n_ubatch), as
Llama.embed() does, clearing the KV cache between decodes.

Setting up a fresh machine (none of this is in the repository):
    python3.11 -m venv /tmp/llvenv
    /tmp/llvenv/bin/pip install llama-cpp-python==0.3.36          # builds from source on CPU: ~30 min on 2 cores
    /tmp/llvenv/bin/pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsdist
    mkdir -p /tmp/llsrc && tar -xzf /tmp/llsdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsrc
    # the converter + its gguf-py are in /tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp/
    /tmp/llvenv/bin/pip install torch==2.13.0                     # the CPU build on this disk
    /tmp/llvenv/bin/pip install transformers==4.57.6 "sentencepiece>=0.1.98,<0.3.0" "protobuf>=4.21.0,<5.0.0"
    .venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); import realshape; realshape.build_real_shape()"
Override the converter's location with LLAMACPP_CONVERTER=/path/to/convert_hf_to_gguf.py.
Cost of llama.cpp's path, visible in the numbers: in embedding mode every token is an output and the Qwen3 graph
still builds the full-vocabulary LM head (151,669 x 1024) for all of them (src/models/qwen3.cpp, t_logits), plus a
logits buffer of n_vocab x n_outputs floats (~310 MB at --batch 512); the RANK head is applied on top of that.
Q4_K_M also quantizes cls.output (the yes/no rows) to Q4_K (Q8_0 keeps it Q8_0); not isolated as a drift source.
Random weights: speed and memory are real, scores are meaningless (agreement only checks the plumbing).
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
MODEL = OUT / "qwen3-reranker-0.6b-random"
WORK = OUT / "llamacpp"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
CONVERTER = Path(os.environ.get(
    "LLAMACPP_CONVERTER", "/tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"))

QUERY = "What are the health effects of drinking green tea every day?"
SENTENCE = ("Green tea contains catechins and a little caffeine; studies on daily drinkers report small effects on "
            "blood pressure, cholesterol and alertness, while very high intakes may upset the stomach. ")
PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
          "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
THREADS = 2
FORMATS = ["Q8_0", "Q4_K_M"]


def documents(n: int) -> list[str]:
    return [f"Document {i}. " + SENTENCE * 5 for i in range(n)]


def agreement_pairs(k: int) -> list[tuple[str, str]]:
    """The benchmark's first documents plus short, varied ones, so the scores are not all alike."""
    extra = ["Green tea is a drink.", "The stock market fell sharply on Tuesday.", "yes", "no",
             "Paris is the capital of France.", "Drinking green tea daily may slightly lower blood pressure."]
    pairs = [(QUERY, d) for d in documents(2)] + [(QUERY, d) for d in extra]
    return pairs[:k]


def prompt(query: str, doc: str) -> str:
    return PREFIX + f"<Instruct>: {INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}" + SUFFIX


def status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- conversion (parent process)

def prepare_src() -> Path:
    """A copy of the HF folder (weights symlinked) with the README heading the converter looks for."""
    src = WORK / "src"
    src.mkdir(parents=True, exist_ok=True)
    for f in MODEL.iterdir():
        dst = src / f.name
        if f.suffix == ".safetensors":
            if not dst.is_symlink():
                dst.symlink_to(f.resolve())
        elif f.is_file():
            shutil.copy2(f, dst)
    # transformers 5 saved extra_special_tokens as a list; the converter's transformers 4.57 wants a dict and
    # fails on a list. additional_special_tokens is the 4.x spelling of the same list.
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text())
    extra = tok_cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        tok_cfg.setdefault("additional_special_tokens", extra)
    elif extra is not None:
        tok_cfg["extra_special_tokens"] = extra
    (src / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (src / "README.md").write_text(
        "# Qwen3-Reranker-0.6B (random weights)\n\nRandom-weight model of the Qwen3-Reranker-0.6B shape, for "
        "benchmarks only. The heading above makes llama.cpp's converter treat it as a reranker.\n")
    return src


def convert(src: Path, outtype: str, dst: Path) -> None:
    if dst.is_file():
        return
    if not CONVERTER.is_file():
        sys.exit(f"converter not found at {CONVERTER}; see the set-up notes at the top of {__file__}")
    tmp = dst.with_suffix(".tmp")
    cmd = [sys.executable, str(CONVERTER), str(src), "--outtype", outtype, "--outfile", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not tmp.is_file():
        sys.exit(f"conversion to {outtype} failed:\n{done.stderr[-3000:]}")
    tmp.rename(dst)


def quantize(src: Path, dst: Path, ftype_name: str) -> None:
    if dst.is_file():
        return
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = THREADS
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        sys.exit(f"llama_model_quantize to {ftype_name} failed with {rc}")
    tmp.rename(dst)


def build_ggufs() -> dict[str, Path]:
    if not (MODEL / "model.safetensors").is_file():
        sys.exit(f"{MODEL} is missing; build it with benchmarks/realshape.py:build_real_shape() (project venv)")
    src = prepare_src()
    q8 = WORK / "qwen3-reranker-0.6b-random-Q8_0.gguf"
    bf16 = WORK / "qwen3-reranker-0.6b-random-bf16.gguf"
    q4 = WORK / "qwen3-reranker-0.6b-random-Q4_K_M.gguf"
    convert(src, "q8_0", q8)
    if not q4.is_file():
        convert(src, "bf16", bf16)
        quantize(bf16, q4, "Q4_K_M")
        bf16.unlink()  # 1.2 GB, only the Q4_K_M's source
    return {"Q8_0": q8, "Q4_K_M": q4}


# ---------------------------------------------------------------- scoring (worker processes)

class Reranker:
    """llama.cpp RANK pooling: one p(yes) per prompt, several prompts per llama_decode."""

    def __init__(self, path: Path, batch: int, flash_attn: bool) -> None:
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
                                   n_ctx=batch, n_batch=batch, n_ubatch=batch, n_threads=THREADS,
                                   n_threads_batch=THREADS, flash_attn=flash_attn, verbose=False)
        self.batch = batch
        self.n_seq_max = self.llm.context_params.n_seq_max
        self.n_cls_out = 2  # labels ["yes", "no"] written by the converter

    def tokens(self, query: str, doc: str) -> list[int]:
        return self.llm.tokenize(prompt(query, doc).encode("utf-8"), add_bos=False, special=True)

    def _decode(self, n_seqs: int, out: list[list[float]]) -> None:
        ctx = self.llm._ctx
        ctx.kv_cache_clear()
        ctx.decode(self.llm._batch)
        self.llm._batch.reset()
        for i in range(n_seqs):
            ptr = self.llama_cpp.llama_get_embeddings_seq(ctx.ctx, i)
            out.append([float(ptr[j]) for j in range(self.n_cls_out)])

    def score_tokens(self, seqs: list[list[int]]) -> list[list[float]]:
        """[p(yes), p(no)] per sequence."""
        out: list[list[float]] = []
        batch = self.llm._batch
        batch.reset()
        used = n = 0
        for toks in seqs:
            if len(toks) > self.batch:
                raise ValueError(f"a prompt of {len(toks)} tokens exceeds --batch {self.batch}")
            if used + len(toks) > self.batch or n >= self.n_seq_max:
                self._decode(n, out)
                used = n = 0
            batch.add_sequence(toks, n, True)  # every token an output, as Llama.embed() does
            used += len(toks)
            n += 1
        if n:
            self._decode(n, out)
        self.llm._ctx.kv_cache_clear()
        return out


def worker_measure(args: argparse.Namespace) -> dict:
    path = Path(args.gguf)
    base = status_bytes("VmRSS")
    start = time.perf_counter()
    rr = Reranker(path, args.batch, args.flash_attn)
    load_s = time.perf_counter() - start
    rss_load = status_bytes("VmRSS")
    docs = documents(args.docs)
    seqs = [rr.tokens(QUERY, d) for d in docs]  # tokenisation is not timed
    rr.score_tokens(seqs[:1])  # warm-up: touches weight pages (mmap) and compute buffers
    rss_warm = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    scores = rr.score_tokens(seqs)
    elapsed = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    p = [s[0] for s in scores]
    return {"gguf": path.name, "file_bytes": path.stat().st_size, "rss_before_load": base, "load_rss": rss_load,
            "load_s": load_s, "rss_after_warmup": rss_warm, "docs": len(docs),
            "tokens_per_pair_mean": sum(map(len, seqs)) / len(seqs), "seconds": elapsed,
            "pairs_per_s": len(docs) / elapsed, "tokens_per_s": sum(map(len, seqs)) / elapsed,
            "peak_rss": peak, "peak_above_loaded": peak - rss_warm, "peak_above_load_rss": peak - rss_load,
            "n_batch": args.batch, "n_seq_max": rr.n_seq_max, "threads": THREADS, "flash_attn": args.flash_attn,
            "p_yes_range": [min(p), max(p)], "finite": all(math.isfinite(x) for s in scores for x in s)}


def worker_agree(args: argparse.Namespace) -> dict:
    rr = Reranker(Path(args.gguf), args.batch, args.flash_attn)
    pairs = agreement_pairs(args.agree)
    seqs = [rr.tokens(q, d) for q, d in pairs]
    return {"ids": seqs, "scores": rr.score_tokens(seqs)}


REFERENCE_CODE = """
import json, sys
import numpy as np
from rerank_export.reference import SourceModel, ReferenceBackend
from rerank_export.scoring import score_pairs
pairs = json.loads(sys.argv[2])
source = SourceModel(sys.argv[1])
backend = ReferenceBackend(source)
scored = score_pairs(backend, source.contract, [tuple(p) for p in pairs])
ids = [list(map(int, source.contract.encode(q, d).input_ids)) for q, d in pairs]
print(json.dumps({"p_yes": scored.scores, "ids": ids}))
"""


def reference_scores(pairs: list[tuple[str, str]]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run([str(PROJECT_PYTHON), "-c", REFERENCE_CODE, str(MODEL), json.dumps(pairs)], cwd=ROOT,
                          capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def run_worker(mode: str, gguf: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--gguf", str(gguf), "--docs", str(args.docs),
           "--batch", str(args.batch), "--agree", str(args.agree)] + (["--flash-attn"] if args.flash_attn else [])
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1][:300]}"}
    return json.loads(lines[-1])


def agreement(ggufs: dict[str, Path], args: argparse.Namespace) -> dict:
    pairs = agreement_pairs(args.agree)
    ref = reference_scores(pairs)
    if "error" in ref:
        return {"error": f"reference: {ref['error']}"}
    result: dict = {"pairs": len(pairs), "reference_p_yes": ref["p_yes"]}
    logit = lambda p: math.log(max(p, 1e-300)) - math.log(max(1 - p, 1e-300))
    for name, path in ggufs.items():
        got = run_worker("agree", path, args)
        if "error" in got:
            result[name] = got
            continue
        p = [s[0] for s in got["scores"]]
        result[name] = {
            "p_yes": p,
            "p_yes_plus_p_no_max_err": max(abs(s[0] + s[1] - 1) for s in got["scores"]),
            "same_token_ids": got["ids"] == ref["ids"],
            "max_abs_delta_p": max(abs(a - b) for a, b in zip(p, ref["p_yes"])),
            "max_abs_delta_logit": max(abs(logit(a) - logit(b)) for a, b in zip(p, ref["p_yes"])),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--batch", type=int, default=512, help="n_ctx = n_batch = n_ubatch (tokens per decode)")
    parser.add_argument("--agree", type=int, default=6, help="pairs for the agreement check (0: skip)")
    parser.add_argument("--flash-attn", action="store_true", help="llama-cpp-python's default is off")
    parser.add_argument("--worker", choices=["measure", "agree"])
    parser.add_argument("--gguf")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps({"measure": worker_measure, "agree": worker_agree}[args.worker](args)))
        return 0

    ggufs = build_ggufs()
    result: dict = {"model": str(MODEL.relative_to(ROOT)), "query": QUERY, "docs": args.docs, "threads": THREADS,
                    "n_batch": args.batch, "llama_cpp_python": _version()}
    if args.agree > 0:
        result["agreement"] = agreement(ggufs, args)
    result["formats"] = {name: run_worker("measure", path, args) for name, path in ggufs.items()}
    text = json.dumps(result, indent=1)
    print(text)
    (OUT / "llamacpp.json").write_text(text + "\n")
    return 0


def _version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


if __name__ == "__main__":
    sys.exit(main())
