"""rerank-export prompt: print the exact text and token ids the model sees for one pair."""

from __future__ import annotations

import argparse
import json

from ..contract import DEFAULT_MAX_LENGTH, Contract, load_tokenizer
from ._common import max_length_int, text_arg

NAME = "prompt"
HELP = "show the exact prompt text and token ids for one (query, document)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or hub id")
    parser.add_argument("--query", required=True, type=text_arg)
    parser.add_argument("--document", required=True, type=text_arg)
    parser.add_argument("--instruction", default=None, type=text_arg)
    parser.add_argument("--max-length", type=max_length_int, default=DEFAULT_MAX_LENGTH)
    parser.add_argument("--json", action="store_true", help="print JSON: text, input_ids, truncated")


def run(args: argparse.Namespace) -> int:
    contract = Contract(load_tokenizer(args.tokenizer), args.max_length)
    encoded = contract.encode(args.query, args.document, args.instruction)
    text = contract.tokenizer.decode(encoded.input_ids)
    if args.json:
        print(json.dumps({"text": text, "input_ids": encoded.input_ids, "num_tokens": len(encoded.input_ids),
                          "truncated": encoded.truncated, "yes_id": contract.yes_id,
                          "no_id": contract.no_id}, ensure_ascii=False))
    else:
        print(text)
        print(f"# {len(encoded.input_ids)} tokens{' (document truncated)' if encoded.truncated else ''}")
        print(" ".join(map(str, encoded.input_ids)))
    return 0
