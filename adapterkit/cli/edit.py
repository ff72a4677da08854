"""`adapterkit edit`: apply edits, write the edited checkpoint or its deltas."""
from __future__ import annotations

import json
import sys

from .command import Command, normalise_loc_arg, timed_reporter, model_args, need_tokenizer, placement_kwargs


def arguments(p) -> None:
    model_args(p)
    p.add_argument("--requests", required=True,
                   help="JSON / JSONL edit records (CounterFact, EasyEdit, KnowEdit, ROME form or zsRE in MEND's format)")
    p.add_argument("--out", help="output directory (edited checkpoint) or file (--deltas-only)")
    p.add_argument("--deltas-only", action="store_true", help="write only the weight deltas (safetensors)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--archive", help="trained editor directory (MEND, SERAC)")
    p.add_argument("--stats-dir")
    p.add_argument("--strict", action="store_true", help="a hyperparameter key no method or EasyEdit reads is an error")
    p.add_argument("--stream", metavar="DIR",
                   help="lifelong editing: continue the stream saved in DIR (or start one there), apply --requests as "
                        "its next batch on top of the earlier ones, and save it; --out then holds every batch's edits "
                        "(docs/streams.md)")
    p.add_argument("--undo-depth", type=int, metavar="N",
                   help="with --stream: keep only the last N batches undoable; older ones are folded into one copy "
                        "of the edited weights, so the folder stops growing by every batch's deltas (default: keep "
                        "every batch; a continued stream keeps the depth it was saved with unless this is given)")
    normalise_loc_arg(p)


def run_edit(args) -> int:
    from .. import api
    from ..checkpoints.loading import load_model
    from ..editing.metrics import summarise
    from ..errors import AdapterkitError
    from ..files.atomic import check_writable
    from ..requests import load_requests
    from ..settings.hparams import load_settings
    from ..streams.stream import checked_undo_depth

    placement = placement_kwargs(args)
    settings = load_settings(args.hparams, strict=args.strict,
                             overrides={"stats_dir": args.stats_dir} if args.stats_dir else None)
    requests = load_requests(args.requests, normalise_loc=args.normalise_loc)
    if args.undo_depth is not None and args.stream is None:
        raise AdapterkitError("--undo-depth is a stream's setting", fix="add --stream DIR, or leave --undo-depth out")
    checked_undo_depth(args.undo_depth)  # before the model is loaded
    if args.stream is not None:
        check_writable(args.stream, what="stream folder", directory=True)
    if args.out is not None:
        check_writable(args.out, what="deltas file" if args.deltas_only else "edited checkpoint",
                       directory=not args.deltas_only, overwrite=args.overwrite or args.deltas_only)
    say = timed_reporter()
    say(f"loading {args.model_path}")
    model, tok = load_model(args.model_path, allow_partial=args.allow_partial_weights, **placement)
    need_tokenizer(tok, args.model_path)
    if args.out is not None and not args.deltas_only:
        from ..files.atomic import check_free_space

        unique = {id(p): p for p in model.parameters()}.values()  # a tied head is saved once
        check_free_space(args.out, sum(p.numel() * p.element_size() for p in unique), what="edited checkpoint")
    stream = None
    if args.stream is not None:
        stream = continued_stream(args.stream, model, tok, settings, str(args.hparams), say, args.undo_depth)
        result = stream.apply(requests, evaluate=True, say=say, requests_source=str(args.requests), archive=args.archive)
        say(f"saving the stream ({len(stream)} batches) to {args.stream}")
        stream.save(args.stream)
    else:
        result = api.edit(model, tok, requests, settings, archive=args.archive, hparams_source=str(args.hparams),
                          requests_source=str(args.requests), say=say)
    say("done")
    summary = {"edits": len(requests), "touched": result.touched, **summarise(result.metrics)}
    if stream is not None:
        summary["stream"] = {"folder": str(args.stream), "batches": len(stream), "requests_per_batch": stream.requests_per_batch}
    print(json.dumps(summary, indent=2))
    if args.out is None:
        return 0
    if args.deltas_only:
        (stream.as_edit_result() if stream is not None else result).save(args.out)
        print(f"wrote deltas to {args.out}", file=sys.stderr)
    else:
        from ..files.atomic import save_pretrained_atomic

        save_pretrained_atomic(result.answerer, tok, args.out, overwrite=args.overwrite)
        print(f"wrote the edited model to {args.out}", file=sys.stderr)
    return 0


def continued_stream(folder, model, tok, settings, hparams_source: str, say, undo_depth: int | None = None):
    """The stream saved in ``folder`` replayed onto ``model``, or a new one where the folder holds none yet;
    ``undo_depth`` (None: the saved stream's, or every batch for a new one) from this batch on."""
    from pathlib import Path

    from ..streams import EditStream
    from ..streams.folder import MANIFEST

    if (Path(folder) / MANIFEST).is_file():
        say(f"replaying the stream saved in {folder}")
        stream = EditStream.load(folder, model, tok, settings, hparams_source=hparams_source)
        say(f"{len(stream)} earlier batch(es) applied again")
        if undo_depth is not None:
            stream.undo_depth = undo_depth
        return stream
    return EditStream(model, tok, settings, hparams_source=hparams_source, undo_depth=undo_depth)


COMMANDS = [Command('edit', run_edit, arguments,
        help="apply edits and write the edited checkpoint or its deltas")]
