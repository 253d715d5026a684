"""The shape of one artifact format: how to export it, how to score with it, what parity it must hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..reference import SourceModel
    from ..scoring import Backend


@dataclass(frozen=True)
class Thresholds:
    """Parity limits an artifact must stay within against the reference (None = not checked)."""

    max_abs_dp: float = 1e-4
    mean_abs_dp: float = 1e-5
    min_spearman_mean: float = 0.999
    min_spearman_worst: float = 0.99
    min_kendall_mean: float = 0.99
    min_top1: float = 1.0
    min_ndcg10: float = 0.999

    def override(self, values: dict[str, Any]) -> Thresholds:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            from ..errors import UsageError

            raise UsageError(f"unknown threshold(s) {unknown}; known: {sorted(known)}")
        return Thresholds(**{**self.__dict__, **{k: float(v) for k, v in values.items()}})


Exporter = Callable[["SourceModel", Path, "FormatSpec", dict[str, Any]], "Manifest"]
Loader = Callable[[Path, "Manifest", str], "Backend"]
# Exports several formats of one family from shared work (ONNX: one fp32 trace for fp32, fp16 and int8).
ManyExporter = Callable[["SourceModel", Path, "list[FormatSpec]", dict[str, dict[str, Any]]], "list[Manifest]"]


@dataclass(frozen=True)
class FormatSpec:
    """One row of the FORMATS table."""

    name: str  # also the artifact's folder name under the output root
    family: str  # baseline | onnx | awq
    dtype: str  # storage precision of the decoder weights
    backend: str  # torch | onnxruntime
    thresholds: Thresholds
    fidelity: int  # higher = closer to the reference; the selector prefers it on GPUs
    cpu_speed: int  # higher = faster on a CPU; the selector prefers it on CPUs
    devices: tuple[str, ...]  # where the format runs: "cpu", "cuda"
    exporter: Exporter
    loader: Loader
    extra: str | None = None  # pip extra the format needs beyond the base install
    options: dict[str, Any] | None = None  # default exporter options
    exporter_many: ManyExporter | None = None
