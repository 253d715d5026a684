"""rerank-export onnx: the single-logit scorer as ONNX (fp32, fp16, int8, int4) for onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import export_formats
from ..formats import family_formats
from ..formats.onnx import ATTENTIONS, DEFAULT_ATTENTION, DEFAULT_OPSET, SUPPORTED_OPSETS
from ..formats.spec import FLOAT_DTYPES
from ._common import add_force_argument, add_model_arguments

FORMATS = family_formats("onnx")  # {dtype: spec}
FLOAT = [d for d in FORMATS if d in FLOAT_DTYPES]
QUANTIZED = [d for d in FORMATS if d not in FLOAT_DTYPES]

NAME = "onnx"
HELP = f"export ONNX artifacts ({', '.join(s.name for s in FORMATS.values())}) with weights as external data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_force_argument(parser)
    parser.add_argument("--out", required=True, help="artifacts root; writes <out>/onnx-<dtype>/")
    parser.add_argument("--dtype", choices=FLOAT, action="append",
                        help="graph precision (repeatable; default fp32 unless only --quantize is given)")
    parser.add_argument("--quantize", choices=QUANTIZED, action="append",
                        help="also write a quantized artifact: int8 (dynamic, MatMul weights) or int4 (AWQ "
                             "search, then 4-bit blocks; reuses <out>/awq-int4's search when it matches)")
    parser.add_argument("--int8-embedding", action="store_true",
                        help="int8 also quantizes the embedding Gather (about halves the file)")
    parser.add_argument("--int4-fp32-embedding", action="store_true",
                        help="int4 keeps the embedding in fp32 (by default it is 4-bit too)")
    parser.add_argument("--opset", type=int, choices=SUPPORTED_OPSETS, default=DEFAULT_OPSET)
    parser.add_argument("--attention", choices=ATTENTIONS, default=DEFAULT_ATTENTION,
                        help="gqa: onnxruntime's GroupQueryAttention, memory linear in length (default); "
                             "matmul: plain ONNX ops for runtimes without it, length x length scores")


def format_names(dtypes: list[str] | None, quantize: list[str] | None) -> list[str]:
    """FORMATS names for the flags, in a stable order, without duplicates."""
    wanted = list(dtypes or ([] if quantize else ["fp32"])) + list(quantize or [])
    return [FORMATS[d].name for d in dict.fromkeys(wanted)]


def run(args: argparse.Namespace) -> int:
    names = format_names(args.dtype, args.quantize)
    options = {FORMATS[d].name: {"opset": args.opset, "attention": args.attention} for d in FORMATS}
    options[FORMATS["int8"].name]["quantize_embedding"] = args.int8_embedding
    options[FORMATS["int4"].name]["quantize_embedding"] = not args.int4_fp32_embedding
    manifests = export_formats(args.model, args.revision, Path(args.out), names, options, replace=args.force,
                               where=dict.fromkeys(names, "command-line options"))
    for manifest in manifests:
        size = sum(f["bytes"] for f in manifest.files.values())
        print(f"{Path(args.out) / manifest.format}  ({size / 2**20:.1f} MiB)")
    return 0
