"""A random-weight model of the real Qwen3-Reranker-0.6B shape, built offline from the fixtures' config,
and the helpers every benchmark shares (fresh-process workers, RESULTS.md sections).

Weights are random (the hub is out of reach here), so speed and memory are real while scores are
meaningless; parity numbers on it say nothing about the real model's quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "qwen3-reranker-0.6b"
OUT = ROOT / "benchmarks" / "out"


# The benchmarks' shared workload: one query and distinct documents of a chosen length.
SCORES_KEPT = 20  # each row keeps its first scores, so the driver can check every scorer saw the same prompts
QUERY = "What are the health effects of drinking green tea every day?"
SENTENCE = ("Green tea contains catechins and a little caffeine; studies on daily drinkers report small effects "
            "on blood pressure, cholesterol and alertness, while very high intakes may upset the stomach. ")
# The model card's prompt around "<Instruct>: {TASK}\n<Query>: {query}\n<Document>: {doc}", and its yes/no ids:
# what the peers in other venvs (onnxruntime-genai, OpenVINO) tokenize, as the card's own code does.
PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
TASK = "Given a web search query, retrieve relevant passages that answer the query"
YES, NO = 9693, 2152


def documents(n: int, tokens: int = 200) -> list[str]:
    """n distinct documents of about `tokens` Qwen tokens each (the sentence is ~40 tokens)."""
    return [f"Document {i}. " + SENTENCE * max(1, tokens // 40) for i in range(n)]


def build_real_shape(out: Path = OUT / "qwen3-reranker-0.6b-random", seed: int = 0) -> Path:
    """Qwen3ForCausalLM with the 0.6B config (28 layers, vocab 151669), bf16, with the real tokenizer."""
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoConfig, Qwen3ForCausalLM

    from rerank_export.contract import load_tokenizer, write_rope_theta
    from rerank_export.manifest import atomic_dir

    config = AutoConfig.from_pretrained(str(FIXTURE))
    torch.manual_seed(seed)
    with atomic_dir(out) as tmp:
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(str(tmp))
        load_tokenizer(FIXTURE).save_pretrained(str(tmp))
        write_rope_theta(tmp / "config.json", 1_000_000.0)
    return out


def run_worker(script: Path, args: list[str], timeout: float = 3600, python: str = sys.executable) -> dict:
    """Run `script --worker ...` in a fresh process (so its peak RSS is its own) and parse its JSON line.

    `python` is another venv's interpreter for engines that live in their own (bench_genai.py).
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run([str(python), str(script), "--worker", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def write_section(path: Path, name: str, section: str) -> None:
    """Replace benchmark `name`'s marked section of RESULTS.md; other sections and prose stay as they are."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmark results\n\n"
    block = f"{start}\n{section}{end}\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
