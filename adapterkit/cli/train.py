"""`adapterkit train`: train a MEND or SERAC editor."""
from __future__ import annotations

import sys

from ..errors import AdapterkitError
from .command import Command, normalise_loc_arg, model_args, need_tokenizer, placement_kwargs, registry


def arguments(p) -> None:
    model_args(p)
    p.add_argument("--train", required=True, help="JSON / JSONL training records (CounterFact, KnowEdit or zsRE in MEND's format)")
    p.add_argument("--val")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    normalise_loc_arg(p)


def run_train(args) -> int:
    from .. import api
    from ..checkpoints.loading import load_model
    from ..settings.hparams import load_settings
    from ..files.atomic import check_writable

    placement = placement_kwargs(args)
    spread = [flag for flag, key in (("--device-map", "device_map"), ("--max-memory", "max_memory"),
                                     ("--offload-folder", "offload_folder")) if placement[key] is not None]
    if spread:
        raise AdapterkitError(f"{spread[0]}: `adapterkit train` trains an editor on a model held on one device, "
                              "not on one spread by a device map",
                              fix="train on one device with --device (cpu, or a GPU that holds the model)")
    settings = load_settings(args.hparams)
    method = registry().method(settings.alg_name)
    if not method.trainable:
        raise AdapterkitError(f"{method.name} needs no training", fix="`adapterkit train` is for MEND and SERAC; use `adapterkit edit` directly")
    check_writable(args.out, what="trained editor", directory=True)
    model, tok = load_model(args.model_path, device=args.device, allow_partial=args.allow_partial_weights)
    need_tokenizer(tok, args.model_path)
    api.train(model, tok, settings, args.train, args.out, val=args.val, resume=args.resume, device=args.device,
              normalise_loc=args.normalise_loc)
    print(f"wrote the {method.name} editor to {args.out}", file=sys.stderr)
    return 0


COMMANDS = [Command('train', run_train, arguments,
        help="train a MEND or SERAC editor")]
