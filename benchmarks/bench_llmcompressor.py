"""llm-compressor's AWQ as a peer of ours: the time and memory its `oneshot` AWQ (W4A16 asymmetric, group 128)
takes on this machine for the random real-shape Qwen3-Reranker-0.6B and the exporter's own calibration prompts.

    .venv/bin/python benchmarks/bench_llmcompressor.py            # dumps the prompts, runs the worker, writes the JSON
    ~/.cache/rerank-export/venv-llmc/bin/python benchmarks/bench_llmcompressor.py --worker CALIB_JSON OUT_DIR THREADS

Writes benchmarks/out/llmcompressor_awq.json (and the compressed model, the prompts and the worker's log under
benchmarks/out/llmcompressor/, which git ignores).

What it does:
1. In the project venv: the calibration set exactly as `rerank-export awq` builds it by default,
   AwqOptions().calibration(load_tokenizer(model)) (the built-in pairs, 64 prompts of the reranker's template,
   7,149 tokens, max length 512), dumped as token-id lists to benchmarks/out/llmcompressor/calibration.json.
2. In the llm-compressor venv, its own process, 2 torch threads, HF_HUB_OFFLINE=1 (nothing is downloaded):
   - load: AutoModelForCausalLM.from_pretrained(model, dtype="auto") -> bf16, as llm-compressor's AWQ examples
     load models (they have no CPU-specific dtype); the tokenizer from the same folder;
   - a datasets.Dataset of the dumped input_ids with attention_mask of ones (already tokenized, so llm-compressor
     uses it as is);
   - llm-compressor's pinning of cached activations (for GPU copies) is skipped: on a CPU-only host torch
     refuses it and the run stops after the first layer;
   - oneshot(model, dataset, recipe, num_calibration_samples=64, max_seq_length=512, batch_size=1 (its default))
     with the recipe of llm-compressor's AWQ examples in its current (transform) API:
         [AWQModifier(),  # Qwen3's registered mappings, duo_scaling=True, n_grid=20 (defaults)
          QuantizationModifier(targets=["Linear"], scheme="W4A16_ASYM", ignore=["lm_head"])]
     W4A16_ASYM is 4-bit int weights, asymmetric, group 128, min-max ranges (no clip search);
   - save: model.save_pretrained(out, save_compressed=True) (compressed-tensors pack-quantized safetensors).
   Seconds of each step (wall and process CPU), peak RSS (getrusage ru_maxrss), versions and the CPU go out as
   one JSON line.

Setting up a fresh machine (none of this is in the repository; nothing goes into the project venv):
    python3 -m venv ~/.cache/rerank-export/venv-llmc
    ~/.cache/rerank-export/venv-llmc/bin/pip install torch==2.13.0          # the CPU build on this disk first
    ~/.cache/rerank-export/venv-llmc/bin/pip install llmcompressor==0.14.0.1  # pulls compressed-tensors 0.19.0,
                                                                             # transformers <= 5.17, datasets
    .venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); import realshape; realshape.build_real_shape()"
Override the llm-compressor venv's python with LLMC_PYTHON=/path/to/python.
Random weights: the times and memory are real, the quantized model's quality is meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _procstat import status_bytes

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
OUT = ROOT / "benchmarks" / "out"
MODEL = OUT / "qwen3-reranker-0.6b-random"
WORK = OUT / "llmcompressor"
RESULT = OUT / "llmcompressor_awq.json"
LLMC_PYTHON = Path(os.environ.get("LLMC_PYTHON",
                                  Path.home() / ".cache" / "rerank-export" / "venv-llmc" / "bin" / "python"))
THREADS = 2
SCHEME = "W4A16_ASYM"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(THREADS)}
# Our own export's measurements on this machine (bench_awq.py), compared against in the record when present.
OURS = {"clip": OUT / "awq_real_shape_clip.json", "no_clip": OUT / "awq_real_shape.json"}


# ---------------------------------------------------------------- driver (project venv)

def dump_calibration(path: Path) -> dict:
    """The exporter's default AWQ calibration prompts as {"input_ids": [[...], ...], ...} in `path`."""
    from rerank_export.contract import load_tokenizer
    from rerank_export.formats.awq import AwqOptions

    options = AwqOptions()
    calib = options.calibration(load_tokenizer(MODEL))
    info = {**calib.describe(), "max_length": options.calib_max_length,
            "longest": max(len(s) for s in calib.input_ids)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**info, "input_ids": [list(s) for s in calib.input_ids]}))
    return info


def run(timeout: float) -> dict:
    if not (MODEL / "model.safetensors").is_file():
        sys.exit(f"no model at {MODEL}: build it with realshape.build_real_shape() (see {SCRIPT.name}'s docstring)")
    if not LLMC_PYTHON.is_file():
        sys.exit(f"no llm-compressor venv python at {LLMC_PYTHON}: see the set-up notes in {SCRIPT.name}'s docstring")
    calib_path = WORK / "calibration.json"
    calibration = dump_calibration(calib_path)
    out_dir = WORK / "awq-w4a16-asym"
    shutil.rmtree(out_dir, ignore_errors=True)
    log = WORK / "worker.log"
    cmd = [str(LLMC_PYTHON), str(SCRIPT), "--worker", str(calib_path), str(out_dir), str(THREADS)]
    env = {**os.environ, **ENV}
    start = time.perf_counter()
    try:
        with open(log, "w") as err:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        record = {"error": f"timed out after {timeout:.0f} s"}
    else:
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = log.read_text().strip().splitlines()[-20:]
            record = {"error": f"exit {done.returncode}", "stderr_tail": tail}
        else:
            record = json.loads(lines[-1])
    record["worker_wall_seconds"] = round(time.perf_counter() - start, 1)
    record["calibration"] = calibration
    record["worker_log"] = str(log.relative_to(ROOT))
    record["ours"] = {k: _ours(p) for k, p in OURS.items() if p.is_file()}
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _ours(path: Path) -> dict:
    r = json.loads(path.read_text())
    return {k: r.get(k) for k in ("export_seconds", "export_cpu_seconds", "search_seconds", "peak_rss_bytes",
                                  "artifact_bytes")}


# ---------------------------------------------------------------- worker (llm-compressor venv, its own process)

def _cpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), None)


class _Clock:
    """Wall and process-CPU seconds of named steps."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}

    def __call__(self, name: str):
        clock = self

        class _Step:
            def __enter__(self):
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                clock.steps[name] = {"seconds": round(time.perf_counter() - self.wall, 2),
                                     "cpu_seconds": round(time.process_time() - self.cpu, 2)}

        return _Step()


def worker(calib_json: str, out_dir: str, threads: int) -> dict:
    import resource
    from importlib.metadata import version

    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    clock = _Clock()
    with clock("import"):
        import datasets
        import torch
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier
        from llmcompressor.pipelines.cache import IntermediatesCache
        from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(threads)
    # llm-compressor 0.14's AWQ pins its cached activations for host-to-GPU copies; without an accelerator
    # torch refuses ("Cannot access accelerator device when none is available"). Nothing is copied on a
    # CPU-only host, so the pinning is skipped; the search and quantisation are untouched.
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None

    data = json.loads(Path(calib_json).read_text())
    ids = data["input_ids"]
    with clock("load"):
        model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(str(MODEL))
    loaded_rss = status_bytes("VmRSS")
    dataset = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids]})
    recipe = [
        AWQModifier(),
        QuantizationModifier(targets=["Linear"], scheme=SCHEME, ignore=["lm_head"]),
    ]
    max_seq_length = max(data["max_length"], max(len(s) for s in ids))
    with clock("oneshot"):
        oneshot(model=model, tokenizer=tokenizer, dataset=dataset, recipe=recipe,
                num_calibration_samples=len(ids), max_seq_length=max_seq_length)
    with clock("save"):
        model.save_pretrained(out_dir, save_compressed=True)
    files = {p.name: p.stat().st_size for p in sorted(Path(out_dir).iterdir()) if p.is_file()}
    qconfig = json.loads((Path(out_dir) / "config.json").read_text()).get("quantization_config", {})
    awq = recipe[0]
    steps = clock.steps
    return {
        "tool": "llm-compressor oneshot AWQ",
        "load_seconds": steps["load"]["seconds"], "oneshot_seconds": steps["oneshot"]["seconds"],
        "save_seconds": steps["save"]["seconds"],
        "total_seconds": round(sum(steps[k]["seconds"] for k in ("load", "oneshot", "save")), 2),
        "steps": steps,  # import is outside the total; cpu_seconds up to threads x seconds
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loaded_rss_bytes": loaded_rss,
        "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "recipe": {"awq": {"duo_scaling": awq.duo_scaling, "n_grid": awq.n_grid, "mappings": "registry default"},
                   "quantization": {"scheme": SCHEME, "targets": ["Linear"], "ignore": ["lm_head"]}},
        "oneshot_args": {"num_calibration_samples": len(ids), "max_seq_length": max_seq_length, "batch_size": 1,
                         "pipeline": "independent (default): sequential for AWQ"},
        "saved_format": qconfig.get("format"), "saved_bytes": sum(files.values()), "saved_files": files,
        "versions": {**{name: version(name) for name in ("llmcompressor", "compressed-tensors", "transformers",
                                                          "torch", "datasets", "accelerate")},
                     "python": sys.version.split()[0]},
        "cpu": _cpu_model(), "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("CALIB_JSON", "OUT_DIR", "THREADS"))
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    args = parser.parse_args()
    if args.worker:
        calib_json, out_dir, threads = args.worker
        print(json.dumps(worker(calib_json, out_dir, int(threads))), flush=True)
        return
    print(json.dumps(run(args.timeout), indent=2))


if __name__ == "__main__":
    main()
