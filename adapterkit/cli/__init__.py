"""The adapterkit command line: each command is a module of this package (or of a plugin), registered through the
``register_commands`` hook; this module builds the parser from them, runs one and maps errors to exit codes."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from ..errors import AdapterkitError, AdapterkitWarning
from .command import Command, registry

__all__ = ["Command", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="adapterkit", description="Knowledge editing on any transformer architecture.")
    parser.add_argument("--version", action="version", version=f"adapterkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in registry().command_list():
        options = {key: value for key, value in (("help", command.help), ("description", command.description),
                                                 ("epilog", command.epilog), ("prog", command.prog)) if value is not None}
        p = sub.add_parser(command.name, **options)
        command.arguments(p)
        p.set_defaults(func=command.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None, *, default=warnings.showwarning):
    """adapterkit's own warnings (its code's, and its plugins') as the CLI's messages, without a source line;
    those of the libraries it uses as Python shows them."""
    if issubclass(category, AdapterkitWarning) or _is_own_code(filename):
        print(f"adapterkit: warning: {message}", file=sys.stderr)
    else:
        default(message, category, filename, lineno, file, line)


def _is_own_code(filename) -> bool:
    import importlib.util
    import os

    roots = []
    for package in ("adapterkit", "adapterkit_plugins"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        roots += [os.path.realpath(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    path = os.path.realpath(str(filename))
    return any(path.startswith(root + os.sep) for root in roots)


def _route_subcommands(argv: list[str]) -> list[str]:
    """`stats import ...` is its own parser, so that `stats MODEL ...` keeps its positional checkpoint
    (a checkpoint directory named `import` is given as `./import`)."""
    return ["stats-import", *argv[2:]] if argv[:2] == ["stats", "import"] else argv


class _StderrReport(logging.Handler):
    """adapterkit's reports (which statistics file is used, and where it came from) as `adapterkit: ...` lines
    on the stderr of the moment."""

    def emit(self, record) -> None:
        print(f"adapterkit: {record.getMessage()}", file=sys.stderr)


def _report_to_stderr() -> None:
    logger = logging.getLogger("adapterkit")
    if not any(isinstance(h, _StderrReport) for h in logger.handlers):
        logger.addHandler(_StderrReport())
        logger.setLevel(logging.INFO)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = build_parser().parse_args(_route_subcommands(argv))
    _report_to_stderr()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except AdapterkitError as exc:
        print(f"adapterkit: error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("adapterkit: interrupted; files being written were left as they were", file=sys.stderr)
        return 130
