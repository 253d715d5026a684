"""FORMATS: the one table of artifact formats that exporters, the parity gate and the loader read.

A new format is one module plus one line here.
"""

from __future__ import annotations

from ..errors import UsageError
from . import baseline
from .spec import FormatSpec, Thresholds

# Parity limits per format, set from measurements on the tiny models and the built-in eval set with
# margin (see README). Random weights put many scores within 0.01 of each other, so 16-bit rounding swaps
# neighbours; on 3-6 document queries one swap costs 0.1-0.2 of worst-query Spearman, hence its low floor.
FP32_LIMITS = Thresholds()
HALF_LIMITS = Thresholds(max_abs_dp=0.03, mean_abs_dp=0.008, min_spearman_mean=0.95, min_spearman_worst=0.6,
                         min_kendall_mean=0.9, min_top1=0.75, min_ndcg10=0.97)

FORMATS: dict[str, FormatSpec] = {
    "baseline-bf16": FormatSpec("baseline-bf16", "baseline", "bf16", "torch", HALF_LIMITS, fidelity=80,
                                cpu_speed=30, devices=("cpu", "cuda"), exporter=baseline.export,
                                loader=baseline.load),
    "baseline-fp16": FormatSpec("baseline-fp16", "baseline", "fp16", "torch", HALF_LIMITS, fidelity=85,
                                cpu_speed=5, devices=("cuda",), exporter=baseline.export,
                                loader=baseline.load),
    "baseline-fp32": FormatSpec("baseline-fp32", "baseline", "fp32", "torch", FP32_LIMITS, fidelity=100,
                                cpu_speed=20, devices=("cpu", "cuda"), exporter=baseline.export,
                                loader=baseline.load),
}


def get_format(name: str) -> FormatSpec:
    """The spec for `name`; an unknown name lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"'{name}' is not a known artifact format; known: {', '.join(FORMATS)}") from None
