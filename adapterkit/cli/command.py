"""What a command is (``Command``), and the argument and model helpers the built-in commands share."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import AdapterkitError


@dataclass(frozen=True)
class Command:
    """One ``adapterkit NAME`` command, handed to the CLI through the ``register_commands`` hook.

    run:        does the work; its return value is the exit code (raise an AdapterkitError for exit 2).
    arguments:  adds the command's arguments to its argparse parser.
    help:       the line in ``adapterkit --help``; a command without one is not listed there.
    """
    name: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    help: str | None = None
    description: str | None = None
    epilog: str | None = None
    prog: str | None = None


def registry():
    from ..arch.registry import get_registry

    return get_registry()


def model_args(p) -> None:
    p.add_argument("model_path")
    p.add_argument("--hparams", required=True, help="YAML written by `adapterkit detect` (EasyEdit files work too)")
    placement_args(p)
    partial_arg(p)


def placement_args(p) -> None:
    """Where the model goes: one ``--device``, or spread by accelerate (``--device-map`` and its options)."""
    from ..checkpoints.placement import DEVICE_MAP_HELP, MAX_MEMORY_HELP

    p.add_argument("--device", help="put the whole model on this device (cpu, cuda, cuda:N)")
    p.add_argument("--device-map", help=f"spread the model over devices with accelerate: {DEVICE_MAP_HELP} "
                                        "(docs/big-models.md)")
    p.add_argument("--max-memory", help=MAX_MEMORY_HELP)
    p.add_argument("--offload-folder", help="where weights the device map sends to the disk are kept")


def placement_kwargs(args) -> dict:
    """``load_model``'s placement keywords from ``placement_args``' arguments, checked (exit 2 on a bad
    --max-memory, or --device beside --device-map)."""
    from ..checkpoints.placement import parse_max_memory, placement_options

    max_memory = getattr(args, "max_memory", None)
    kwargs = {"device": getattr(args, "device", None), "device_map": getattr(args, "device_map", None),
              "max_memory": parse_max_memory(max_memory) if max_memory is not None else None,
              "offload_folder": getattr(args, "offload_folder", None)}
    placement_options(**kwargs, where="adapterkit")
    return kwargs


def partial_arg(p) -> None:
    p.add_argument("--allow-partial-weights", action="store_true",
                   help="load weights that do not cover the model (missing tensors stay randomly initialised)")


def normalise_loc_arg(p) -> None:
    p.add_argument("--normalise-loc", action="store_true",
                   help="rewrite zsRE locality questions (loc) as plain questions: drop the 'nq question: ' prefix and "
                        "end in '?' (default: verbatim, as EasyEdit passes them)")


def need_tokenizer(tok, path) -> None:
    if tok is None:
        raise AdapterkitError(f"{path}: no tokenizer files found", fix="copy the tokenizer files (tokenizer.json / tokenizer_config.json) into the checkpoint directory")


def timed_reporter():
    """say(line): prints ``adapterkit: [12.3 s] line`` on stderr, the seconds since the command started."""
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"adapterkit: [{time.perf_counter() - started:.1f} s] {line}", file=sys.stderr)
    return say
