"""rerank-export pick: show which artifact would be served on this device, and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..contract import DEFAULT_MAX_LENGTH
from ..plan import plan
from ..select import render_decision
from ._common import max_length_int, size_bytes

NAME = "pick"
HELP = "show every artifact's memory estimate and parity verdict, and the one that would be served"


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --memory, --max-length, --allow-unverified: shared with `serve`."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="target device (default: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--memory", default=None, metavar="SIZE", type=size_bytes,
                        help="memory budget, e.g. 4GiB (default: the GPU's free memory or available RAM)")
    parser.add_argument("--max-length", type=max_length_int, default=DEFAULT_MAX_LENGTH,
                        help=f"longest (query + document) sequence in tokens (default {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="also consider artifacts whose parity failed or was never checked")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", help="artifacts root (or one artifact folder)")
    add_device_arguments(parser)
    parser.add_argument("--no-verify", action="store_true",
                        help="do not check the chosen artifact's files against their sha256 (faster on big "
                             "artifacts; serve and load() still check them)")


def run(args: argparse.Namespace) -> int:
    from ..preflight import preflight

    decision, _ = plan(args.artifacts, args.device, args.memory, args.max_length, args.allow_unverified,
                       verify=not args.no_verify, check=preflight)
    print(render_decision(decision))
    if decision.chosen is not None:
        name = Path(decision.chosen.folder).name
        print(f"files: NOT checked against their sha256 (--no-verify); serve and load() check {name}'s"
              if args.no_verify else f"files: every file of {name} matches its sha256 in the manifest, and "
          "it passes the checks loading makes")
    return 0 if decision.chosen is not None else 1
