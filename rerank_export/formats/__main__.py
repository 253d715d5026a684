"""python -m rerank_export.formats --thresholds-table: print what the docs show from FORMATS."""

from __future__ import annotations

import argparse
import sys

from . import FORMATS
from .doc import END, START, thresholds_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rerank_export.formats", description=__doc__)
    parser.add_argument("--thresholds-table", action="store_true", required=True,
                        help=f"the parity thresholds table in Markdown, to paste between {START} and {END}")
    parser.parse_args(argv)
    print(thresholds_table(FORMATS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
