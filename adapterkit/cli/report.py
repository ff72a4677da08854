"""`adapterkit report`: several `adapterkit eval` runs side by side."""
from __future__ import annotations

import sys

from .command import Command


def arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="directories written by `adapterkit eval --out`")
    p.add_argument("--out", required=True, help="directory for summary.md, comparison.json and comparison.png")


def run_report(args) -> int:
    from ..evaluation.report import write_comparison

    write_comparison(args.runs, args.out)
    print(f"adapterkit: wrote summary.md and comparison.json to {args.out}", file=sys.stderr)
    sys.stdout.write(open(f"{args.out}/summary.md", encoding="utf-8").read())
    return 0


COMMANDS = [Command("report", run_report, arguments, help="set several `adapterkit eval` runs side by side")]
