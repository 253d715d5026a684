"""Argument helpers shared by several subcommands."""

from __future__ import annotations

import argparse

from ..reference import DEFAULT_MODEL


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub id or local folder of the original reranker (default {DEFAULT_MODEL})")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
