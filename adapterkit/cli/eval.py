"""`adapterkit eval`: edit each request (or batch), measure it before and after every way docs/evaluation.md
lists, undo it; write report.json, rows.jsonl, summary.md and a plot; resume an interrupted run."""
from __future__ import annotations

import sys

from .command import Command, normalise_loc_arg, partial_arg, placement_args, placement_kwargs, timed_reporter


def arguments(p) -> None:
    p.add_argument("model_path")
    p.add_argument("--hparams", required=True, help="YAML written by `adapterkit detect` (EasyEdit files work too)")
    p.add_argument("--data", required=True, help="JSON / JSONL edit records, in any form `edit` reads")
    p.add_argument("--out", required=True, help="run directory; started again with the same --out, a run resumes")
    p.add_argument("--n", type=int, help="evaluate the first N records (default: all)")
    p.add_argument("--batch", type=int, default=1,
                   help="requests edited in one call, undone after each batch (default 1: single edits)")
    p.add_argument("--sequential", action="store_true",
                   help="lifelong editing: apply the batches one after another and never undo them; every earlier edit "
                        "is measured again as they pile up (curve.jsonl, curve.png)")
    p.add_argument("--every", type=int,
                   help="with --sequential: measure every earlier edit again after each this many edits (default: --batch)")
    p.add_argument("--chat", action="store_true",
                   help="put every prompt in the tokenizer's chat template, for the edit and the measurement")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="greedy answers stop at end of sequence, a newline, or after this many tokens (default 32)")
    p.add_argument("--fluency-max-new-tokens", type=int, default=100,
                   help="length of the continuations of generation_prompts scored for fluency (default 100)")
    p.add_argument("--compile", action="store_true",
                   help="decode greedy answers through transformers' static cache, compiled (CUDA graphs) on a CUDA "
                        "device: the same answers up to rounding, several times faster per step, after a compile of about a minute")
    p.add_argument("--heldout", help="held-out texts for perplexity: one per line, or JSONL / JSON of strings or "
                                     "{\"text\": ...} (default: 50 shipped CounterFact sentences)")
    p.add_argument("--archive", help="trained editor directory (MEND, SERAC)")
    placement_args(p)
    partial_arg(p)
    normalise_loc_arg(p)


def run_eval(args) -> int:
    from ..evaluation.run import EvalSettings, run_eval as run

    placement = placement_kwargs(args)
    device = placement.pop("device")
    settings = EvalSettings(n=args.n, batch=args.batch, chat=args.chat, max_new_tokens=args.max_new_tokens,
                            fluency_max_new_tokens=args.fluency_max_new_tokens, normalise_loc=args.normalise_loc,
                            heldout=args.heldout, sequential=args.sequential, every=args.every,
                            compile_generation=args.compile)
    say = timed_reporter()
    try:
        report = run(args.model_path, args.hparams, args.data, args.out, settings, device=device,
                     allow_partial=args.allow_partial_weights, archive=args.archive, say=say, placement=placement)
    except KeyboardInterrupt:
        print(f"adapterkit: the rows of every finished edit are in {args.out}/rows.jsonl; run the same command "
              "again to resume", file=sys.stderr)
        raise
    say(f"done: {report['counts']['requests']} requests; wrote report.json, rows.jsonl and summary.md to {args.out}")
    sys.stdout.write(open(f"{args.out}/summary.md", encoding="utf-8").read())
    return 0


COMMANDS = [Command("eval", run_eval, arguments,
                    help="edit and measure requests (teacher-forced, probabilities, greedy generation, fluency, "
                         "perplexity) with confidence intervals; resumable; writes report.json and summary.md")]
