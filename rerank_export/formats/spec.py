"""The shape of one artifact format: how to export it, how to score with it, what parity it must hold."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import between, option, parse_options

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..reference import SourceModel
    from ..scoring import Backend


# Float storage precisions by our short names and by torch's (the one table; vLLM's --dtype uses torch's).
FLOAT_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# Where each limit can lie: |dp| of probabilities in [0, 1]; correlations in [-1, 1]; rates in [0, 1].
# None (not checked) is a default only: an override names a number (TOML has no null).
DP, CORRELATION, RATE = between(0.0, 1.0), between(-1.0, 1.0), between(0.0, 1.0)


@dataclass(frozen=True)
class Thresholds:
    """Parity limits an artifact must stay within against the reference (None = not checked)."""

    max_abs_dp: float = option(1e-4, DP)
    mean_abs_dp: float = option(1e-5, DP)
    min_spearman_mean: float = option(0.999, CORRELATION)
    min_spearman_worst: float | None = option(0.99, CORRELATION)
    min_kendall_mean: float = option(0.99, CORRELATION)
    min_top1: float = option(1.0, RATE)
    min_ndcg10: float = option(0.999, RATE)
    # |dp| of a pair alone against the same pair in batches (parity.batch_invariance); fp32 kernels pick
    # other blockings for other shapes, so even exact formats differ by rounding there.
    max_batch_dp: float | None = option(1e-5, DP)

    def override(self, values: Any, where: str = "thresholds") -> Thresholds:
        """These limits with `values` ({field: number}) in place; every value is checked (finite, in range).

        A Thresholds instance (already parsed, e.g. a recipe's) passes through unchanged. `where` names the
        file and format in errors, e.g. "thresholds file 'x.json': onnx-int8".
        """
        return parse_options(Thresholds, values, where, kind="threshold", base=self)


# Exporters write one artifact into the folder they are given (the export stage's temp folder, renamed
# into place once measured) and return its manifest.
Exporter = Callable[["SourceModel", Path, "FormatSpec", Any], "Manifest"]
Loader = Callable[[Path, "Manifest", str], "Backend"]
# Exports several formats of one family from shared work (ONNX: one fp32 trace for fp32, fp16 and int8),
# each into its own folder ({format name: folder}).
Checker = Callable[[Path, "Manifest"], None]
ManyExporter = Callable[["SourceModel", "dict[str, Path]", "list[FormatSpec]", "dict[str, Any]"], "list[Manifest]"]


@dataclass(frozen=True)
class FormatSpec:
    """One row of the FORMATS table: everything the rest of the toolkit knows about a format."""

    name: str  # also the artifact's folder name under the output root
    family: str  # baseline | onnx | awq: the exporting command
    dtype: str  # storage precision of the decoder weights
    backend: str  # torch | onnxruntime
    thresholds: Thresholds
    fidelity: int  # higher = closer to the reference; breaks ties in the selector
    cpu_speed: int  # higher = faster on a CPU; the selector ranks CPU picks by it
    gpu_speed: int  # higher = faster on a CUDA GPU; the selector weighs it with headroom (select.py)
    # Where the format runs, and on what: {"cpu" | "cuda": "torch" or an onnxruntime execution provider}.
    devices: Mapping[str, str]
    exporter: Exporter
    loader: Loader
    options: type  # the exporter's options dataclass (formats/options.py parses it)
    extra: str | None = None  # pip extra the format needs beyond the base install
    exporter_many: ManyExporter | None = None
    # Runs slower than fp32 on a CPU that emulates its dtype (bf16 without AVX512-BF16 or AMX).
    needs_native_bf16: bool = False
    # vLLM loads the folder as it is (a Hugging Face checkpoint); with this --quantization method if set.
    vllm_loadable: bool = False
    vllm_quantization: str | None = None
    # Load-time checks of the folder that need no weights read (preflight.py runs them for pick and load).
    check: Checker | None = None
    # How the runtime reuses a query's shared prefix: "wrapper" (prefix.PrefixReuseBackend around a torch
    # decoder + score head) or "own" (the backend does it itself: ONNX graphs with past inputs).
    prefix_reuse: str = "wrapper"
    library: str = "transformers"  # the model card's library_name (what loads the folder)
    # The artifact the build summary's size ratios are against (the first built, in FORMATS order).
    size_reference: bool = False
