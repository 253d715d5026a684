"""rerank-export tiny: build the embedded random-weight Qwen3 reranker (no download)."""

from __future__ import annotations

import argparse

from ..tiny import build_tiny
from ._common import seed_int

NAME = "tiny"
HELP = "build a deterministic tiny random-weight Qwen3 reranker (offline demo and tests)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="new folder to write the model to (an existing one is refused, see --force)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder to use (default: a small tokenizer built here)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier tiny model of ours at --out (never anything else)")


def run(args: argparse.Namespace) -> int:
    out = build_tiny(args.out, args.tokenizer, args.seed, replace=args.force)
    print(out)
    return 0
