"""`adapterkit conformance`: check a plugin end to end."""
from __future__ import annotations

import sys

from .command import Command


def arguments(p) -> None:
    p.add_argument("target", help="a plugin distribution directory, a declaration .yaml, or a checkpoint directory")
    p.add_argument("--methods", help="comma-separated subset of rome,memit,pmet,mend,serac (default: all five)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON (atomically)")
    p.add_argument("--cache-dir", help="where trained fact models, editors and statistics are kept "
                                       "(default ~/.cache/adapterkit/conformance)")


def run_conformance(args) -> int:
    from ..arch.conformance import ConformanceSettings, parse_methods, run_and_report

    settings = ConformanceSettings(methods=parse_methods(args.methods), cache_dir=args.cache_dir)
    passed = run_and_report(args.target, settings, json_path=args.json, say=lambda line: print(line, file=sys.stderr))
    return 0 if passed else 1


COMMANDS = [Command('conformance', run_conformance, arguments,
        help="check a plugin (or a checkpoint's declaration) end to end: templates, layout, "
        "norm and head on a tiny model, every method editing a trained one, restore, deltas")]
