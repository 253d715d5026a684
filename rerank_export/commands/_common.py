"""Argument helpers shared by several subcommands: each turns a bad value into a one-line usage error."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..contract import MAX_LENGTH_LIMIT
from ..reference import DEFAULT_MODEL

MAX_SEED = 2**32 - 1  # numpy's seed range, inside torch's


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub id or local folder of the original reranker (default {DEFAULT_MODEL})")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier artifact of ours at the target (never anything else)")


def bounded_int(low: int, high: int, what: str = "integer") -> Callable[[str], int]:
    """An argparse type for an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also Python's limit on digits
            raise argparse.ArgumentTypeError(f"expected an {what}, got {_show(text)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an {what} from {low} to {high}, got {_show(text)}")
        return value

    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {_show(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {_show(text)}")
    return value


max_length_int = bounded_int(1, MAX_LENGTH_LIMIT, "integer token count")
seed_int = bounded_int(0, MAX_SEED, "integer seed")
# For --port (owner: commands/serve.py); 0 asks the OS for a free port.
port_int = bounded_int(0, 65535, "integer port")


def size_bytes(text: str) -> int:
    """An argparse type for sizes such as 4GiB or 8MiB (finite, within select.MAX_MEMORY_BYTES)."""
    from ..errors import UsageError
    from ..select import parse_memory

    try:
        return parse_memory(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def text_arg(text: str) -> str:
    """An argparse type for free text: refuses bytes that are not UTF-8 (they arrive as lone surrogates)."""
    bad = next((i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"text is not valid UTF-8 (at character {bad}); pass UTF-8 text")
    return text


def _show(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"
