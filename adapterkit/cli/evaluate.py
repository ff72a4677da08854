"""`adapterkit evaluate`: measure requests on a model, before and after deltas (teacher-forced only). Kept as an
alias beside `adapterkit eval`, which edits and measures every way docs/evaluation.md lists."""
from __future__ import annotations

import json
import sys

from .command import Command, normalise_loc_arg, need_tokenizer, partial_arg, placement_args, placement_kwargs, registry


def arguments(p) -> None:
    p.add_argument("model_path")
    p.add_argument("--requests", required=True, help="JSON / JSONL edit records, in any form `edit` reads")
    p.add_argument("--deltas")
    placement_args(p)
    partial_arg(p)
    normalise_loc_arg(p)


def run_evaluate(args) -> int:
    from ..checkpoints.loading import load_model
    from ..editing.metrics import compare, evaluate, summarise
    from ..editing.result import apply_deltas
    from ..requests import check_requests_fit, load_requests

    placement = placement_kwargs(args)
    print("adapterkit: note: `evaluate` is kept as an alias and works as before (teacher-forced metrics, printed); "
          "`adapterkit eval` measures by generation and probabilities too, with confidence intervals, and writes "
          "a resumable report (docs/evaluation.md)", file=sys.stderr)
    requests = load_requests(args.requests, normalise_loc=args.normalise_loc)
    model, tok = load_model(args.model_path, allow_partial=args.allow_partial_weights, **placement)
    need_tokenizer(tok, args.model_path)
    check_requests_fit(requests, tok, model, registry().for_model(model), source=str(args.requests))
    before = evaluate(model, tok, requests) if args.deltas else None  # locality compares before and after
    if args.deltas:
        apply_deltas(model, args.deltas)
    weights = "with deltas " + args.deltas if args.deltas else "as loaded"
    rows = compare(before, evaluate(model, tok, requests), weights=weights)
    print(json.dumps({"weights": weights, **summarise(rows)}, indent=2))
    if not args.deltas:
        print("locality compares predictions before and after an edit: pass --deltas to measure it", file=sys.stderr)
    return 0


COMMANDS = [Command('evaluate', run_evaluate, arguments,
        help="(alias kept beside `eval`) teacher-forced efficacy, generalisation and KnowEdit "
        "portability of requests on a model; with --deltas, locality too")]
