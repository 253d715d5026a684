"""OpenVINO as a CPU peer: the seq-cls baseline converted with `ov.convert_model`, scored the way an OpenVINO user
would (ov.Core + compile_model, the model card's prompt, one pair per inference), at its default precision on this
CPU, with NNCF's int8 weights, and with its int8 weights and activations.

    python benchmarks/bench_openvino.py --setup            # makes its venv (below); prints its python
    .venv/bin/python benchmarks/bench_openvino.py --build  # converts benchmarks/out/openvino/{default,int8-*}
    .venv/bin/python benchmarks/bench_openvino.py [--docs 100] [--length 200]   # prints the rows as JSON

Its own venv (~/.cache/rerank-export/venv-openvino, or OPENVINO_PYTHON): openvino, nncf, torch and transformers
(to trace the PyTorch model). optimum-intel, the other way users convert, was not used: its 2.2.0 pulls a CUDA
build of torch 2.14 and transformers 5.5 into the environment. openvino-genai's TextRerankPipeline was not tried (it
wants the tokenizer converted to OpenVINO too, and how it builds Qwen3's prompt was not checked); the seq-cls
graph scores the exact token ids of the model card's prompt, so every row here sees the same prompts as
bench_compare's others.

What it does (everything under benchmarks/out/openvino/, which git ignores):
1. --build loads the baseline artifact (Qwen3ForSequenceClassification, one logit = logit_yes - logit_no) in fp32,
   traces it with ov.convert_model (a wrapper returns the logits with use_cache=False: the traced output must be
   tensors) on a padded two-row example, and saves the IR with ov.save_model (its default: fp16 weights). Then:
     default:      that IR; the CPU plugin picks its inference precision (bf16 where the CPU has it natively)
     int8-weights: nncf.compress_weights(model) on the fp32 graph (NNCF's default for it: int8 asymmetric,
                   per channel, activations at the default precision)
     int8-static:  nncf.quantize(model, dataset, model_type=TRANSFORMER): int8 weights and int8 activations
                   with scales calibrated on CALIBRATION prompts (other documents than the timed ones), the
                   path NNCF documents for the fastest CPU inference
     int8-static-reuse: not how users run OpenVINO but what an `openvino-int8` format of ours would be:
                   the decoder traced with the shared prefix's keys/values as inputs (past_keys, past_values:
                   layers x 1 x KV heads x P x head_dim), so each pair runs only its tail, as onnx-int8 with
                   reuse does; int8-static's quantization, calibrated on tails after another query's prefix
   Build seconds and bytes go to benchmarks/out/openvino/<variant>/build.json.
2. The worker compiles the IR with INFERENCE_NUM_THREADS=2 (everything else default, as a user would), tokenizes
   the model card's prompt with the artifact's tokenizer, and scores one pair per infer call (no padding: every
   document differs in length): p(yes) = sigmoid(logit). Warm-up on 1 document, then the timed DOCS documents;
   peak RSS above the loaded RSS as bench_compare.worker measures it. The row records the compiled model's
   INFERENCE_PRECISION_HINT. int8-static-reuse's worker computes each query's prefix keys/values once (PyTorch,
   fp32, outside the timed part, as onnx-int8 computes and keeps its prefix's) and feeds them with each tail.

Random weights: speed and memory are real, scores only check the plumbing against the model card's code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _procstat import serve_scorer, time_scorer
from realshape import PREFIX, SUFFIX, TASK, documents, run_worker  # stdlib only at import

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
OUT = ROOT / "benchmarks" / "out"
WORK = OUT / "openvino"
BASELINE = OUT / "artifacts" / "baseline-bf16"
VENV = Path.home() / ".cache" / "rerank-export" / "venv-openvino"
OPENVINO_PYTHON = Path(os.environ.get("OPENVINO_PYTHON", VENV / "bin" / "python"))
# Installed into the venv; torch first, the CPU build on this project's machines (scripts/venv.sh says why).
PACKAGES = (["torch==2.13.0"], ["transformers>=5.16.1,<5.21", "safetensors", "openvino>=2026.4", "nncf>=3.4"])
THREADS = 2
VARIANTS = ("default", "int8-weights", "int8-static", "int8-static-reuse")
REUSE = "int8-static-reuse"  # ours, not how users run OpenVINO: the tail graph that continues a prefix's keys/values
CALIBRATION = 32  # prompts for int8-static's activation scales


# ---------------------------------------------------------------- set-up and build (the openvino venv)

def setup() -> Path:
    """Create (or reuse) the OpenVINO venv; returns its python."""
    if not OPENVINO_PYTHON.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    for group in PACKAGES:
        subprocess.run([str(OPENVINO_PYTHON), "-m", "pip", "install", "-q", *group], check=True)
    return OPENVINO_PYTHON


def _convert(baseline: Path) -> tuple[object, float]:
    """The traced OpenVINO model of the seq-cls baseline (fp32) and the seconds it took."""
    import openvino as ov
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(baseline), dtype=torch.float32).eval()

    class Logits(torch.nn.Module):  # the traced output must be tensors, not a ModelOutput with a cache
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    example = AutoTokenizer.from_pretrained(str(baseline))(["a padded example", "two"], padding=True,
                                                           return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        converted = ov.convert_model(Logits(model), example_input=dict(example))
    return converted, time.perf_counter() - start


def build(baseline: Path = BASELINE) -> dict:
    """Every variant under WORK (each skipped when built); {variant: build.json}."""
    import nncf

    todo = [v for v in VARIANTS if not (WORK / v / "build.json").is_file()]
    if REUSE in todo:
        todo.remove(REUSE)
        prefix = _Prefix(baseline)
        source = prefix.model()  # one fp32 load for the trace and both prefixes
        converted, seconds = _convert_tail(prefix, source)
        calibration = _tail_calibration(prefix, source)
        del source
        start = time.perf_counter()
        model = nncf.quantize(converted, nncf.Dataset(calibration),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=CALIBRATION)
        _save(model, REUSE, seconds + time.perf_counter() - start, baseline)
    if todo:
        converted, seconds = _convert(baseline)
        for variant in todo:
            start = time.perf_counter()
            model = (nncf.compress_weights(converted.clone()) if variant == "int8-weights" else
                     nncf.quantize(converted.clone(), nncf.Dataset(_calibration(baseline)),
                                   model_type=nncf.ModelType.TRANSFORMER, subset_size=CALIBRATION)
                     if variant == "int8-static" else converted)
            _save(model, variant, seconds + time.perf_counter() - start, baseline)
    return {v: json.loads((WORK / v / "build.json").read_text()) for v in VARIANTS}


class _Prefix:
    """A query's prefix (the token ids its prompts share) and its keys/values from the PyTorch decoder (fp32,
    loaded for that and let go after, so a worker's loaded memory is OpenVINO's)."""

    def __init__(self, baseline: Path) -> None:
        self.baseline = baseline
        self.ids = _prompt_ids(baseline)

    def model(self):
        import torch
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(str(self.baseline), dtype=torch.float32).eval()

    def split(self, query: str) -> list[int]:
        a, b = self.ids(query, "A"), self.ids(query, "B")
        return a[:next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)]

    def kv(self, prefix: list[int], model=None) -> dict:
        """`prefix`'s keys/values, from `model` (the seq-cls baseline) or a fresh load let go after."""
        import torch

        with torch.no_grad():
            cache = (model or self.model()).model(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values
        return {"past_keys": torch.stack([layer.keys for layer in cache.layers]).numpy(),
                "past_values": torch.stack([layer.values for layer in cache.layers]).numpy()}


def _convert_tail(prefix: _Prefix, source) -> tuple[object, float]:
    """The traced tail graph: (input_ids, past_keys, past_values) -> logit, the prefix's keys/values lent to
    each layer (a cache layer that concatenates them with the tail's and keeps nothing)."""
    import openvino as ov
    import torch
    from transformers.cache_utils import Cache, DynamicLayer

    class Lent(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.dtype, self.device, self.keys, self.values, self.is_initialized = keys.dtype, keys.device, keys, values, True

        def update(self, key_states, value_states, *args, **kwargs):
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    class Tail(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor) -> torch.Tensor:
            cache = Cache(layers=[Lent(past_keys[i], past_values[i]) for i in range(past_keys.shape[0])])
            start, length = past_keys.shape[3], input_ids.shape[1]
            return self.inner(input_ids=input_ids, attention_mask=torch.ones(1, start + length, dtype=torch.long),
                              past_key_values=cache, position_ids=torch.arange(start, start + length)[None],
                              use_cache=False).logits

    head = prefix.split("What is it?")
    past = prefix.kv(head, source)
    example = (torch.tensor([prefix.ids("What is it?", "a document")[len(head):]]),
               torch.from_numpy(past["past_keys"]), torch.from_numpy(past["past_values"]))
    start = time.perf_counter()
    with torch.no_grad():
        converted = ov.convert_model(Tail(source), example_input=example)
    return converted, time.perf_counter() - start


def _tail_calibration(prefix: _Prefix, source) -> list[dict]:
    """int8-static's calibration prompts as tails after their query's prefix."""
    import numpy as np

    query = "How is green tea made?"
    head = prefix.split(query)
    past = prefix.kv(head, source)
    lengths = np.linspace(50, 400, CALIBRATION).astype(int)
    return [{"input_ids": np.asarray([prefix.ids(query, doc)[len(head):]], dtype=np.int64), **past}
            for doc in (documents(1, int(n))[0] for n in lengths)]


def _calibration(baseline: Path) -> list[dict]:
    """CALIBRATION model-card prompts of 50 to 400 tokens, with another query than the timed one."""
    import numpy as np

    ids = _prompt_ids(baseline)
    lengths = np.linspace(50, 400, CALIBRATION).astype(int)
    return [{"input_ids": (row := np.asarray([ids("How is green tea made?", doc)], dtype=np.int64)),
             "attention_mask": np.ones_like(row)} for doc in (documents(1, int(n))[0] for n in lengths)]


def _prompt_ids(folder: Path):
    """(query, document) -> the model card's prompt ids, with the folder's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    pre, suf = (tokenizer.encode(t, add_special_tokens=False) for t in (PREFIX, SUFFIX))
    return lambda query, doc: pre + tokenizer.encode(
        f"<Instruct>: {TASK}\n<Query>: {query}\n<Document>: {doc}", add_special_tokens=False) + suf


def _save(model: object, variant: str, seconds: float, baseline: Path) -> None:
    import openvino as ov

    tmp, dst = WORK / f"{variant}.tmp", WORK / variant
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ov.save_model(model, str(tmp / "openvino_model.xml"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(baseline / name, tmp / name)
    info = {"variant": variant, "build_seconds": seconds, "openvino": ov.__version__,
            "bytes": sum(f.stat().st_size for f in tmp.glob("openvino_model.*"))}
    (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


# ---------------------------------------------------------------- worker (openvino venv, its own process)

def _scorer(folder: str):
    """compile_model with 2 threads; the model card's prompt ids; one infer per pair -> sigmoid(logit)."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(Path(folder) / "openvino_model.xml"), "CPU",
                                       {"INFERENCE_NUM_THREADS": THREADS})
    request = compiled.create_infer_request()
    if Path(folder).name == REUSE:
        return _tail_scorer(compiled, request)
    prompt_ids = _prompt_ids(Path(folder))

    def score(query: str, docs: list[str]) -> list[float]:
        out = []
        for doc in docs:
            ids = np.asarray([prompt_ids(query, doc)], dtype=np.int64)
            logit = float(request.infer({"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0, 0])
            out.append(1.0 / (1.0 + math.exp(-logit)))
        return out

    score.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return score


def _tail_scorer(compiled, request):
    """int8-static-reuse: each query's prefix keys/values computed once (PyTorch fp32), then one infer per tail."""
    import numpy as np

    prefix, pasts = _Prefix(BASELINE), {}  # query -> (its prefix ids, their keys/values)

    def score(query: str, docs: list[str]) -> list[float]:
        if query not in pasts:
            head = prefix.split(query)
            pasts[query] = head, prefix.kv(head)
        head, past = pasts[query]
        out = []
        for doc in docs:
            ids = prefix.ids(query, doc)
            if ids[:len(head)] != head:
                raise ValueError("a prompt that does not start with its query's prefix")
            tail = np.asarray([ids[len(head):]], dtype=np.int64)
            logit = float(request.infer({"input_ids": tail, **past})[0][0, 0])
            out.append(1.0 / (1.0 + math.exp(-logit)))
        return out

    score.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return score


def worker(folder: str, docs: int, length: int) -> dict:
    score = _scorer(folder)
    return {**time_scorer(score, docs, length), "prefix_reuse": Path(folder).name == REUSE,
            "inference_precision": score.precision,
            "how": f"ov.Core().compile_model(IR, 'CPU', INFERENCE_NUM_THREADS={THREADS}), one infer per pair"}


# ---------------------------------------------------------------- rows for bench_compare (project venv)

def row_name(variant: str) -> str:
    if variant == REUSE:
        return "OpenVINO int8-static, prefix keys/values as inputs (our prototype, own venv)"
    return f"OpenVINO {variant} (ov.convert_model of baseline-bf16, own venv)"


def openvino_lanes(docs: int, length: int = 200) -> list:
    """Lockstep lanes (benchmarks/lockstep.py) for every built variant, in the OpenVINO venv."""
    from lockstep import Lane

    return [Lane(row_name(v), [str(OPENVINO_PYTHON), str(SCRIPT), "--worker", str(WORK / v), str(docs), str(length),
                               "--lockstep"])
            for v in VARIANTS if OPENVINO_PYTHON.is_file() and (WORK / v / "build.json").is_file()]


def openvino_rows(docs: int, length: int = 200, timeout: float = 7200) -> dict[str, dict]:
    """{"OpenVINO <variant> (...)": row}, each worker in the OpenVINO venv, in its own process."""
    rows = {}
    for variant in VARIANTS:
        name = row_name(variant)
        record = WORK / variant / "build.json"
        if not OPENVINO_PYTHON.is_file() or not record.is_file():
            rows[name] = {"error": f"not built: run python {SCRIPT.relative_to(ROOT)} --setup, then --build"}
            continue
        row = run_worker(SCRIPT, [str(WORK / variant), str(docs), str(length)], timeout, str(OPENVINO_PYTHON))
        info = json.loads(record.read_text())
        rows[name] = {**row, "build_seconds": info["build_seconds"], "openvino": info["openvino"],
                      "bytes": info["bytes"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT_DIR", "DOCS", "LENGTH"))
    parser.add_argument("--lockstep", action="store_true", help="with --worker: serve chunks (lockstep.py)")
    parser.add_argument("--setup", action="store_true", help="create the OpenVINO venv; print its python")
    parser.add_argument("--build", action="store_true", help="convert every variant (in the OpenVINO venv)")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the seq-cls baseline to convert")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--length", type=int, default=200)
    args = parser.parse_args()
    if args.worker and args.lockstep:  # benchmarks/lockstep.py drives it
        folder, docs, length = args.worker
        serve_scorer(_scorer(folder), int(docs), int(length))
    elif args.worker:
        folder, docs, length = args.worker
        print(json.dumps(worker(folder, int(docs), int(length))))
    elif args.setup:
        print(setup())
    elif args.build:
        if importlib.util.find_spec("openvino") is None:  # the conversion runs in the OpenVINO venv
            sys.exit(subprocess.run([str(OPENVINO_PYTHON), str(SCRIPT), *sys.argv[1:]], check=False).returncode)
        print(json.dumps(build(args.baseline), indent=1))
    else:
        print(json.dumps(openvino_rows(args.docs, args.length), indent=1))


if __name__ == "__main__":
    main()
