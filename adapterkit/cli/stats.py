"""`adapterkit stats`: compute second-moment statistics, or adopt a ROME / EasyEdit file."""
from __future__ import annotations

import sys

from ..errors import AdapterkitError
from .command import Command, model_args, need_tokenizer, partial_arg, placement_kwargs, registry


def stats_arguments(p) -> None:
    model_args(p)
    p.add_argument("--corpus", required=True, help="local .txt / .jsonl / .parquet file or a saved `datasets` directory")
    p.add_argument("--stats-dir")
    p.add_argument("--n-samples", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--all-layers", action="store_true",
                   help="load every layer of the model (default: only the layers up to the deepest edit layer, where "
                        "the pass stops; the statistics are the same)")
    p.add_argument("--checkpoint-every", type=int, metavar="DOCUMENTS",
                   help="write a checkpoint of the pass every DOCUMENTS documents of each process's share, from which "
                        "a killed run continues (default: a tenth of the share, at least 1000; 0: none)")


def stats_import_arguments(p) -> None:
    # `adapterkit stats import ...` (main() routes it here; no help=, so the command list shows only `stats`)
    p.add_argument("file", help="the .npz file")
    p.add_argument("--model", required=True, help="the checkpoint the statistics belong to")
    p.add_argument("--layer", type=int, required=True, help="the layer whose rewrite module they describe")
    p.add_argument("--hparams", help="the hparams that will read them (default: ROME's published statistics settings)")
    p.add_argument("--stats-dir")
    p.add_argument("--force", action="store_true",
                   help="import a file whose name (ROME / EasyEdit: MODULE_DTYPE_mom2_N.npz) or metadata says it was "
                        "written for another layer or module (the mismatch is recorded with its provenance)")
    p.add_argument("--device")
    partial_arg(p)


def run_stats(args) -> int:
    from ..checkpoints.loading import load_first_layers, load_model
    from ..editing.ranks import launch_size, process_group
    from ..editing.stats import compute_stats
    from ..settings.hparams import load_settings
    from ..files.atomic import check_writable
    from ..methods import LocateThenEditSettings

    placement = placement_kwargs(args)
    settings = load_settings(args.hparams)
    if not isinstance(settings, LocateThenEditSettings):
        raise AdapterkitError(f"{args.hparams}: {settings.alg_name} reads no second-moment statistics",
                              fix="give the hyperparameter file of a locate-then-edit method (ROME, MEMIT, PMET)")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise AdapterkitError(f"--checkpoint-every {args.checkpoint_every}: a number of documents",
                              fix="give a positive number of documents between checkpoints, or 0 for none")
    stats_dir = args.stats_dir or settings.stats_dir
    check_writable(stats_dir, what="statistics directory", directory=True)
    launched = launch_size() > 1
    if launched and placement["device_map"] is not None:
        raise AdapterkitError("--device-map under torchrun: every process would spread its own copy of the model "
                              "over the same devices",
                              fix="under torchrun each process holds the model on its own GPU (cuda:LOCAL_RANK, the "
                                  "default) or --device cpu; spread one process's model with --device-map without torchrun")
    on_gpu = launched and placement["device"] != "cpu" and _cuda_available()
    with process_group(on_gpu) as ranks:
        if on_gpu and placement["device"] in (None, "cuda"):
            placement["device"] = f"cuda:{ranks.local_rank}"
        if args.all_layers or min(settings.layers) < 0:
            model, tok = load_model(args.model_path, allow_partial=args.allow_partial_weights, **placement)
        else:
            model, tok, loaded = load_first_layers(args.model_path, max(settings.layers) + 1,
                                                   allow_partial=args.allow_partial_weights, **placement)
            if ranks.leader:
                print(f"adapterkit: {loaded.describe()}", file=sys.stderr)
        need_tokenizer(tok, args.model_path)
        spec = registry().for_model(model)
        paths = compute_stats(model, tok, settings, spec, args.corpus, stats_dir, n_samples=args.n_samples,
                              batch_size=args.batch_size, device=placement["device"], ranks=ranks,
                              checkpoint_every=args.checkpoint_every)
    for layer, path in paths.items() if ranks.leader else ():
        print(f"layer {layer}: {path}")
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_stats_import(args) -> int:
    from ..arch.detect import detect
    from ..checkpoints.loading import load_model
    from ..editing.stats import import_npz
    from ..settings.hparams import load_settings
    from ..files.atomic import check_writable
    from ..methods import LocateThenEditSettings

    if args.hparams:
        settings = load_settings(args.hparams)
        if not isinstance(settings, LocateThenEditSettings):
            raise AdapterkitError(f"{args.hparams}: {settings.alg_name} reads no second-moment statistics",
                                  fix="give the hyperparameter file of a locate-then-edit method (ROME, MEMIT, PMET)")
    else:  # ROME's published statistics settings: EasyEdit's file naming and folder (wikipedia_stats, 100000, float32)
        settings = load_settings(dict(detect(args.model, method="ROME", allow_partial=args.allow_partial_weights)))
    stats_dir = args.stats_dir or settings.stats_dir
    check_writable(stats_dir, what="statistics directory", directory=True)
    model, _ = load_model(args.model, device=args.device, allow_partial=args.allow_partial_weights)
    path = import_npz(args.file, model, registry().for_model(model), settings, args.layer, stats_dir, force=args.force)
    print(path)
    return 0


COMMANDS = [
    Command('stats', run_stats, stats_arguments,
        help="compute (and cache) second-moment statistics of the rewrite layers",
        epilog="`adapterkit stats import FILE.npz --model CKPT --layer N` adopts a ROME / EasyEdit file"),
    Command('stats-import', run_stats_import, stats_import_arguments,
        prog="adapterkit stats import",
        description="adopt a ROME / EasyEdit second-moment file (mom2.mom2, mom2.count) for a layer: "
        "its shape is checked against the model, its provenance recorded"),
]
