"""FORMATS: the one table of artifact formats that exporters, the parity gate and the loader read.

A new format is one module plus one line here.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from . import awq, baseline, onnx
from .options import NoOptions, parse_options
from .spec import FormatSpec, Thresholds

# Parity limits per format, set from measurements on the tiny models and the built-in eval set with
# margin (docs/parity.md). max_batch_dp (a pair alone against the same pair in batches, parity.batch_invariance),
# seeds 0-1 with the long document: fp32 formats and awq-int4 (fp32 compute) at most 1.8e-6, so the default
# 1e-5; bf16 8.1e-3 and fp16 1.7e-3 (16-bit rounding follows the batch's shapes); every ONNX format 0
# (below). Random weights put many scores within 0.01 of each other, so 16-bit rounding swaps
# neighbours; on 3-6 document queries one swap costs 0.1-0.2 of worst-query Spearman, hence its low floor.
FP32_LIMITS = Thresholds()
# bf16 rounds differently with native bf16 (AVX512-BF16, AMX) than with AVX2's emulation: seed 0 measured
# max |dp| 0.0075, Spearman mean 0.972, Kendall 0.952, top-1 0.75 on an EPYC with AVX512-BF16 and 0.0093,
# 0.975, 0.958, 0.875 under qemu as Haswell; fp16 8e-4 and 6e-4, ranks exact. Rank floors sit 0.1 (top-1:
# one query of eight) below the worst, as for the quantized formats below.
HALF_LIMITS = Thresholds(max_abs_dp=0.03, mean_abs_dp=0.008, min_spearman_mean=0.87, min_spearman_worst=0.6,
                         min_kendall_mean=0.85, min_top1=0.625, min_ndcg10=0.97, max_batch_dp=0.015)

# The quantized limits below hold on every CPU we could run: tiny random models (seeds 0-2), the built-in
# eval set, scored natively on an AMD EPYC Zen 4 (AVX512-VNNI, AVX512-BF16, no AMX) and under qemu-user as a
# Haswell (AVX2, no VNNI) and a Nehalem (SSE4.2: onnxruntime's plain fallbacks, which is what an AMX Xeon's
# onnx-int4 matched). Limits: 1.5x the worst max/mean |dp|; rank floors 0.1 below the worst measured, since
# on 3-6 near-tied documents per query a 0.017 change in scores moved Spearman mean by 0.066 (seed 0,
# onnx-int4, int8 against fp32 activations). docs/parity.md has every measured value.

# AWQ int4 (torch, dequantized fp32 matmuls: the same on every CPU) and onnx-int4 (MatMulNBits with int8
# activations on AVX2/AVX512/AMX, fp32 on plain SSE). Worst measured: max |dp| 0.33 (demo search settings),
# mean 0.16, Spearman mean 0.372 and Kendall mean 0.344 (onnx-int4, seed 0, SSE path), top-1 0.375 (seed 0),
# NDCG 0.986. 4-bit noise on random weights reorders near-tied scores, so worst-query Spearman (down to
# -0.89) is not checked there; the floors still fail a swapped head or a broken graph (Spearman ~ -1).
AWQ_LIMITS = Thresholds(max_abs_dp=0.45, mean_abs_dp=0.22, min_spearman_mean=0.27, min_spearman_worst=None,
                        min_kendall_mean=0.24, min_top1=0.25, min_ndcg10=0.95)  # fp32 compute: max_batch_dp 1e-5

# ONNX on the tiny model, built-in eval set (tests/unit/test_onnx.py): fp32 max |dp| ~5e-7, fp16 ~8e-4
# (mean 2.5e-4; 3.0e-3 and 3.5e-3 on seeds 0-1 with GroupQueryAttention's fp16 kernel), the same on every
# CPU. Batch invariance: the ONNX backend splits each row after its own document marker and runs its tail
# alone (formats/onnx/session.py), so max_batch_dp measured 0 for every ONNX format on seeds 0-1, and the
# limit is the fp32 default. Graphs exported with attention = "matmul" run whole padded batches and fail it
# (measured fp16 8.3e-4, int4 5.7e-3, int8 0.103): their gate needs a max_batch_dp override. int8 uses 7-bit weights (formats/onnx/convert.py INT8_REDUCE_RANGE) so it
# scores identically with AVX512-VNNI, AVX2 and SSE4.2: seeds 0-2 max |dp| 0.054, 0.101, 0.052, mean 0.011,
# 0.026, 0.016, Spearman mean 0.94, 1.0, 1.0, top-1 1.0. (Full-range weights had reached 0.178 on AVX2.)
ONNX_FP32_LIMITS = Thresholds(max_abs_dp=1e-5, mean_abs_dp=2e-6)
ONNX_FP16_LIMITS = Thresholds(max_abs_dp=0.01, mean_abs_dp=0.002, min_spearman_mean=0.99,
                              min_spearman_worst=0.8, min_kendall_mean=0.95, min_top1=0.9, min_ndcg10=0.995)
# quantize_dynamic takes one activation scale per MatMul input over every row of a run. Run whole, a padded
# batch shares them (max_batch_dp 0.051 and 0.103 on seeds 0-1 before the per-row split); split after each
# row's own document marker, the scales are the row's own, and a pair scores exactly the same in any batch.
ONNX_INT8_LIMITS = Thresholds(max_abs_dp=0.15, mean_abs_dp=0.04, min_spearman_mean=0.83,
                              min_spearman_worst=0.3, min_kendall_mean=0.78, min_top1=0.75, min_ndcg10=0.98)
# onnx-int4 applies the AWQ search, then onnxruntime's 4-bit blocks (embedding included); it gates like
# awq-int4 (tests/unit/test_onnx_int4.py), so it shares its limits.
ONNX_INT4_LIMITS = AWQ_LIMITS

# cpu_speed ranks CPU picks. Measured on the 0.6B shape, 2 threads, 100 documents through the runtime
# (benchmarks/RESULTS.md): onnx-int8 2.0 pairs/s, bf16 with native bf16 1.7 (emulated: last), onnx-int4
# 1.6, onnx-fp32 1.1, fp32 0.84, awq-int4 0.80.
# gpu_speed ranks CUDA picks (with headroom, select.py). Not yet measured on a GPU (benchmarks/gpu_check.py
# measures it): 16-bit tensor-core GEMMs first, awq-int4 next (it dequantises each 4-bit layer per call,
# then runs an fp16 GEMM), fp32 last (twice the bytes, no tensor cores without TF32).

# Where each graph really runs. onnxruntime's GroupQueryAttention has CUDA kernels for fp16 and bf16 only,
# and the int8 graphs' DynamicQuantizeMatMul is a CPU kernel, so fp32, int8 and int4 graphs are CPU graphs;
# the fp16 graph is a CUDA graph (its fp16 kernels are slow on a CPU).
_CPU_EP, _CUDA_EP = {"cpu": "CPUExecutionProvider"}, {"cuda": "CUDAExecutionProvider"}
_TORCH_ANYWHERE = {"cpu": "torch", "cuda": "torch"}

_ONNX = {"family": "onnx", "backend": "onnxruntime", "loader": onnx.load, "extra": "cpu", "prefix_reuse": "own",
         "library": "onnxruntime",
         "check": lambda folder, _manifest: onnx.check_graph(folder / onnx.MODEL_FILE)}
_TORCH = {"backend": "torch", "vllm_loadable": True}
_BASELINE = {**_TORCH, "family": "baseline", "exporter": baseline.export, "loader": baseline.load,
             "options": NoOptions}

FORMATS: dict[str, FormatSpec] = {s.name: s for s in (
    FormatSpec("awq-int4", family="awq", dtype="int4", thresholds=AWQ_LIMITS, fidelity=40, cpu_speed=10,
               gpu_speed=60, devices=_TORCH_ANYWHERE, exporter=awq.export, loader=awq.load,
               check=lambda folder, _manifest: awq.read_quant_config(folder),
               options=awq.AwqOptions, vllm_quantization="awq", **_TORCH),
    FormatSpec("baseline-bf16", dtype="bf16", thresholds=HALF_LIMITS, fidelity=80, cpu_speed=65, gpu_speed=95,
               devices=_TORCH_ANYWHERE, needs_native_bf16=True, size_reference=True, **_BASELINE),
    FormatSpec("baseline-fp16", dtype="fp16", thresholds=HALF_LIMITS, fidelity=85, cpu_speed=5, gpu_speed=100,
               devices={"cuda": "torch"}, size_reference=True, **_BASELINE),
    FormatSpec("baseline-fp32", dtype="fp32", thresholds=FP32_LIMITS, fidelity=100, cpu_speed=20, gpu_speed=30,
               devices=_TORCH_ANYWHERE, **_BASELINE),
    FormatSpec("onnx-fp16", dtype="fp16", thresholds=ONNX_FP16_LIMITS, fidelity=85, cpu_speed=10, gpu_speed=80,
               devices=_CUDA_EP, exporter=onnx.export, exporter_many=onnx.export_many,
               options=onnx.OnnxFp16Options, **_ONNX),
    FormatSpec("onnx-fp32", dtype="fp32", thresholds=ONNX_FP32_LIMITS, fidelity=100, cpu_speed=40, gpu_speed=0,
               devices=_CPU_EP, exporter=onnx.export, exporter_many=onnx.export_many,
               options=onnx.OnnxOptions, **_ONNX),
    FormatSpec("onnx-int4", dtype="int4", thresholds=ONNX_INT4_LIMITS, fidelity=35, cpu_speed=60, gpu_speed=0,
               devices=_CPU_EP, exporter=onnx.export_int4, options=onnx.OnnxInt4Options, **_ONNX),
    FormatSpec("onnx-int8", dtype="int8", thresholds=ONNX_INT8_LIMITS, fidelity=60, cpu_speed=70, gpu_speed=0,
               devices=_CPU_EP, exporter=onnx.export, exporter_many=onnx.export_many,
               options=onnx.OnnxInt8Options, **_ONNX),
)}

# The original checkpoint is no artifact: nothing exports or gates it (it is the reference), only vLLM serves it.
# The selector sizes vLLM for it with a row's traits, kept here so that only the registry describes formats.
ORIGINAL = "original"
ORIGINAL_TRAITS: dict[str, Any] = {"fidelity": 100, "cpu_speed": 0, "devices": ("cuda", "cpu"), "backend": "torch"}


def family_formats(family: str) -> dict[str, FormatSpec]:
    """{dtype: spec} of one family, for the exporting command's choices."""
    return {s.dtype: s for s in FORMATS.values() if s.family == family}


def parse_format_options(spec: FormatSpec, values: Any, where: str | None = None) -> Any:
    """spec.options from a {key: value} table (or an instance); errors name `where`."""
    return parse_options(spec.options, values if values is not None else {}, where or f"{spec.name} options")


def get_format(name: str) -> FormatSpec:
    """The spec for `name`; an unknown name lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"'{name}' is not a known artifact format; known: {', '.join(FORMATS)}") from None
