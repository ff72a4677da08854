"""A third-party adapterkit command, found through the `adapterkit` entry points like the built-in ones."""
from adapterkit import hookimpl
from adapterkit.cli import Command


def arguments(parser) -> None:
    parser.add_argument("deltas", help="a deltas file written by `adapterkit edit --deltas-only` or EditResult.save")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")


def run(args) -> int:
    from .deltas import describe, read_deltas

    rows = describe(read_deltas(args.deltas))
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['weight']:<48} {'x'.join(map(str, row['shape'])):>12}  norm {row['norm']:.4g}  rank {row['rank']}")
    return 0


@hookimpl
def register_commands(register):
    register(Command("inspect-deltas", run, arguments, help="list the weights a deltas file changes, with norm and rank"))
