"""rerank-export build: a recipe's artifacts, gated on parity, with a pick per deployment target."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..build import build
from ..recipe import load_recipe

NAME = "build"
HELP = "export every artifact of a recipe, run the parity gate, report what each target should load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe TOML file (see recipes/)")
    parser.add_argument("--out", required=True, help="artifacts root")
    parser.add_argument("--force", action="store_true", help="rebuild artifacts that are already current")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    result = build(recipe, Path(args.out), force=args.force, progress=not args.quiet)
    print(result.summary, end="")
    if not result.passed:
        print("rerank-export: parity FAILED; see the table above and each artifact's parity.md", file=sys.stderr)
        return 1
    return 0
