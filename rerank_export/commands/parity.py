"""rerank-export parity: the CI gate. Exit 0 when every artifact passes, 1 when any breaches."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..evalsets import BUILTIN, load_eval_set
from ..parity import check_artifacts, load_thresholds, render_markdown
from ..reference import SourceModel
from ._common import add_model_arguments, positive_int

NAME = "parity"
HELP = "score eval sets with the reference and every artifact; exit 1 on any breach"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", help="artifacts root (or one artifact folder)")
    add_model_arguments(parser)
    parser.add_argument("--eval", action="append", metavar="FILE",
                        help=f"eval set: '{BUILTIN}', a JSONL file or a NovelEval folder (repeatable; "
                             f"default {BUILTIN})")
    parser.add_argument("--thresholds", default=None, help="JSON/TOML file of per-format threshold overrides")
    parser.add_argument("--only", action="append", metavar="NAME", help="check only these artifact folders")
    parser.add_argument("--max-queries", type=positive_int, default=None,
                        help="use only the first N queries of each eval set (quick checks)")


def run(args: argparse.Namespace) -> int:
    eval_sets = [load_eval_set(e).limit(args.max_queries) for e in (args.eval or [BUILTIN])]
    thresholds = load_thresholds(args.thresholds)
    source = SourceModel(args.model, args.revision)
    reports = check_artifacts(Path(args.artifacts), source, eval_sets, thresholds, args.only,
                              progress=not args.quiet)
    print(render_markdown(reports), end="")
    failed = [r.name for r in reports if not r.passed]
    if failed:
        print(f"rerank-export: parity FAILED for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
