"""FORMATS: the one table of artifact formats that exporters, the parity gate and the loader read.

A new format is one module plus one line here.
"""

from __future__ import annotations

from ..errors import UsageError
from . import awq, baseline, onnx
from .spec import FormatSpec, Thresholds

# Parity limits per format, set from measurements on the tiny models and the built-in eval set with
# margin (see README). Random weights put many scores within 0.01 of each other, so 16-bit rounding swaps
# neighbours; on 3-6 document queries one swap costs 0.1-0.2 of worst-query Spearman, hence its low floor.
FP32_LIMITS = Thresholds()
HALF_LIMITS = Thresholds(max_abs_dp=0.03, mean_abs_dp=0.008, min_spearman_mean=0.95, min_spearman_worst=0.6,
                         min_kendall_mean=0.9, min_top1=0.75, min_ndcg10=0.97)

# AWQ int4, measured on the tiny random model over four search settings: max|dp| 0.21-0.30, mean 0.09-0.16,
# Spearman mean 0.55-0.78, Kendall mean 0.51-0.61, top-1 0.44-0.78, NDCG 0.99. 4-bit noise on random
# weights reorders near-tied scores, so worst-query Spearman (down to -0.89) is not checked there.
AWQ_LIMITS = Thresholds(max_abs_dp=0.4, mean_abs_dp=0.22, min_spearman_mean=0.4, min_spearman_worst=None,
                        min_kendall_mean=0.35, min_top1=0.3, min_ndcg10=0.95)

# ONNX on the tiny model, built-in eval set (tests/unit/test_onnx.py): fp32 max |dp| ~5e-7, fp16 ~8e-4
# (mean 2.5e-4). int8 (MatMul weights, per channel) depends on the CPU's int8 kernels: on an earlier
# machine max |dp| 0.056, mean 0.021, Spearman mean 0.92, top-1 0.89; on one with AVX512-VNNI 0.049, 0.015,
# 0.83 and 0.625. Smaller errors there still swap the tiny model's near-tied scores, so the rank floors are low.
ONNX_FP32_LIMITS = Thresholds(max_abs_dp=1e-5, mean_abs_dp=2e-6)
ONNX_FP16_LIMITS = Thresholds(max_abs_dp=0.01, mean_abs_dp=0.002, min_spearman_mean=0.99,
                              min_spearman_worst=0.8, min_kendall_mean=0.95, min_top1=0.9, min_ndcg10=0.995)
ONNX_INT8_LIMITS = Thresholds(max_abs_dp=0.12, mean_abs_dp=0.045, min_spearman_mean=0.7,
                              min_spearman_worst=0.3, min_kendall_mean=0.6, min_top1=0.5, min_ndcg10=0.98)
# onnx-int4 applies the AWQ search, then onnxruntime's 4-bit blocks (embedding included); on the tiny model
# it gates like awq-int4 (max |dp| 0.33, mean 0.19; tests/unit/test_onnx_int4.py), so it shares its limits.
ONNX_INT4_LIMITS = AWQ_LIMITS

# cpu_speed ranks CPU picks. Measured on the 0.6B shape, 2 threads, 100 documents through the runtime
# (benchmarks/RESULTS.md): onnx-int8 2.0 pairs/s, bf16 with native bf16 1.7 (emulated: last), onnx-int4
# 1.6, onnx-fp32 1.1, fp32 0.84, awq-int4 0.80.

FORMATS: dict[str, FormatSpec] = {
    "awq-int4": FormatSpec("awq-int4", "awq", "int4", "torch", AWQ_LIMITS, fidelity=40, cpu_speed=10,
                           devices=("cpu", "cuda"), exporter=awq.export, loader=awq.load),
    "baseline-bf16": FormatSpec("baseline-bf16", "baseline", "bf16", "torch", HALF_LIMITS, fidelity=80,
                                cpu_speed=65, devices=("cpu", "cuda"), exporter=baseline.export,
                                loader=baseline.load),
    "baseline-fp16": FormatSpec("baseline-fp16", "baseline", "fp16", "torch", HALF_LIMITS, fidelity=85,
                                cpu_speed=5, devices=("cuda",), exporter=baseline.export,
                                loader=baseline.load),
    "baseline-fp32": FormatSpec("baseline-fp32", "baseline", "fp32", "torch", FP32_LIMITS, fidelity=100,
                                cpu_speed=20, devices=("cpu", "cuda"), exporter=baseline.export,
                                loader=baseline.load),
    "onnx-fp16": FormatSpec("onnx-fp16", "onnx", "fp16", "onnxruntime", ONNX_FP16_LIMITS, fidelity=85,
                            cpu_speed=10, devices=("cuda",), exporter=onnx.export, loader=onnx.load,
                            extra="cpu", options={"opset": onnx.DEFAULT_OPSET}, exporter_many=onnx.export_many),
    "onnx-fp32": FormatSpec("onnx-fp32", "onnx", "fp32", "onnxruntime", ONNX_FP32_LIMITS, fidelity=100,
                            cpu_speed=40, devices=("cpu", "cuda"), exporter=onnx.export, loader=onnx.load,
                            extra="cpu", options={"opset": onnx.DEFAULT_OPSET}, exporter_many=onnx.export_many),
    "onnx-int4": FormatSpec("onnx-int4", "onnx", "int4", "onnxruntime", ONNX_INT4_LIMITS, fidelity=35,
                            cpu_speed=60, devices=("cpu", "cuda"), exporter=onnx.export_int4, loader=onnx.load,
                            extra="cpu", options={"opset": onnx.DEFAULT_OPSET}),
    "onnx-int8": FormatSpec("onnx-int8", "onnx", "int8", "onnxruntime", ONNX_INT8_LIMITS, fidelity=60,
                            cpu_speed=70, devices=("cpu", "cuda"), exporter=onnx.export, loader=onnx.load,
                            extra="cpu", options={"opset": onnx.DEFAULT_OPSET}, exporter_many=onnx.export_many),
}


def get_format(name: str) -> FormatSpec:
    """The spec for `name`; an unknown name lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"'{name}' is not a known artifact format; known: {', '.join(FORMATS)}") from None
