"""`adapterkit new-plugin`: write a plugin distribution for an undeclared checkpoint."""
from __future__ import annotations

import sys

from .command import Command


def arguments(p) -> None:
    p.add_argument("checkpoint")
    p.add_argument("--name", required=True, help="distribution name, e.g. adapterkit-newarch")
    p.add_argument("-o", "--output", required=True, help="directory to write the distribution into")
    p.add_argument("--overwrite", action="store_true")


def run_new_plugin(args) -> int:
    from ..arch.scaffold import new_plugin
    from ..arch.validate import validate_file

    declaration = new_plugin(args.checkpoint, args.name, args.output, overwrite=args.overwrite)
    print(f"wrote the {args.name} distribution to {args.output} (declaration: {declaration})", file=sys.stderr)
    problems = validate_file(declaration)
    if problems:
        print(problems, file=sys.stderr)
        return 2
    print(f"{declaration}: valid; next: review it, then `pip install -e \"{args.output}[test]\"` and run its tests", file=sys.stderr)
    return 0


COMMANDS = [Command('new-plugin', run_new_plugin, arguments,
        help="write a pip-installable plugin distribution for a checkpoint no plugin declares")]
