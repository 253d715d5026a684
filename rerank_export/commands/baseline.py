"""rerank-export baseline: the 16-bit (or fp32) sequence-classification artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import export_formats
from ..formats import family_formats
from ._common import add_force_argument, add_model_arguments

NAME = "baseline"
HELP = "export the baseline artifact: Qwen3ForSequenceClassification with a yes-minus-no head"
FORMATS = family_formats("baseline")  # {dtype: spec}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_force_argument(parser)
    parser.add_argument("--out", required=True, help="artifacts root; writes <out>/baseline-<dtype>/")
    parser.add_argument("--dtype", choices=sorted(FORMATS), action="append",
                        help="storage dtype (repeatable; default bf16: the model was trained in bf16)")


def run(args: argparse.Namespace) -> int:
    names = [FORMATS[d].name for d in dict.fromkeys(args.dtype or ["bf16"])]
    for manifest in export_formats(args.model, args.revision, Path(args.out), names, replace=args.force):
        print(f"{Path(args.out) / manifest.format}  ({manifest.memory.weight_bytes / 2**20:.1f} MiB weights)")
    return 0
