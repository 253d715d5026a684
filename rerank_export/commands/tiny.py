"""rerank-export tiny: build the embedded random-weight Qwen3 reranker (no download)."""

from __future__ import annotations

import argparse

from ..tiny import build_tiny

NAME = "tiny"
HELP = "build a deterministic tiny random-weight Qwen3 reranker (offline demo and tests)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder to use (default: a small tokenizer built here)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    out = build_tiny(args.out, args.tokenizer, args.seed)
    print(out)
    return 0
