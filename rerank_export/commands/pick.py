"""rerank-export pick: show which artifact would be served on this device, and why."""

from __future__ import annotations

import argparse

from ..contract import DEFAULT_MAX_LENGTH
from ..runtime import plan
from ..select import render_decision
from ._common import positive_int

NAME = "pick"
HELP = "show every artifact's memory estimate and parity verdict, and the one that would be served"


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --memory, --max-length, --allow-unverified: shared with `serve`."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="target device (default: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--memory", default=None, metavar="SIZE",
                        help="memory budget, e.g. 4GiB (default: the GPU's free memory or available RAM)")
    parser.add_argument("--max-length", type=positive_int, default=DEFAULT_MAX_LENGTH,
                        help=f"longest (query + document) sequence in tokens (default {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="also consider artifacts whose parity failed or was never checked")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", help="artifacts root (or one artifact folder)")
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    decision, _ = plan(args.artifacts, args.device, args.memory, args.max_length, args.allow_unverified)
    print(render_decision(decision))
    return 0 if decision.chosen is not None else 1
