"""rerank-export awq: the AWQ 4-bit artifact in AutoAWQ's GEMM layout (loadable by vLLM)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..calibration import DEFAULT_MAX_LENGTH, DEFAULT_SAMPLES
from ..export import export_formats
from ..formats import family_formats, parse_format_options
from ..formats.awq import AwqOptions
from ._common import add_force_argument, add_model_arguments, max_length_int, positive_int

NAME = "awq"
HELP = "export the AWQ int4 artifact (activation-aware scales + clipping, AutoAWQ GEMM layout)"
SPEC = family_formats("awq")["int4"]
FORMAT = SPEC.name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_force_argument(parser)
    parser.add_argument("--out", required=True, help=f"artifacts root; writes <out>/{FORMAT}/")
    # Kept for AutoAWQ-style command lines: 4 is the only choice (the GEMM layout), so it is not an option.
    parser.add_argument("--w-bit", type=int, choices=[4], default=4,
                        help="weight bits: 4 only (the AWQ GEMM layout vLLM loads); accepted, changes nothing")
    parser.add_argument("--group-size", type=positive_int, default=128,
                        help="input channels per quantisation group (default 128)")
    parser.add_argument("--calib", default=None,
                        help="calibration JSONL of {query, document[, instruction]} lines (default: built-in set)")
    parser.add_argument("--calib-samples", type=positive_int, default=DEFAULT_SAMPLES,
                        help=f"calibration prompts (default {DEFAULT_SAMPLES})")
    parser.add_argument("--calib-max-length", type=max_length_int, default=DEFAULT_MAX_LENGTH,
                        help=f"tokens per calibration prompt; documents are truncated (default {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--no-clip", action="store_true", help="skip the clipping-range search (faster)")
    parser.add_argument("--search-device", choices=["cpu", "cuda"], default="cpu",
                        help="where the AWQ search runs (cuda: one block at a time on the GPU; default cpu)")


def options(args: argparse.Namespace) -> AwqOptions:
    """The flags as the format's typed options (the same parser as a recipe's `options` table)."""
    table = {"group_size": args.group_size, "calib": args.calib, "calib_samples": args.calib_samples,
             "calib_max_length": args.calib_max_length, "clip": not args.no_clip,
             "search_device": args.search_device}
    return parse_format_options(SPEC, table, "command-line options")


def run(args: argparse.Namespace) -> int:
    (manifest,) = export_formats(args.model, args.revision, Path(args.out), [FORMAT], {FORMAT: options(args)},
                                 replace=args.force)
    print(f"{Path(args.out) / manifest.format}  ({manifest.memory.weight_bytes / 2**20:.1f} MiB resident weights)")
    return 0
