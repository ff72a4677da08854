"""`adapterkit validate`: check an architecture declaration or a hyperparameter file."""
from __future__ import annotations

import sys

from .command import Command, partial_arg


def arguments(p) -> None:
    p.add_argument("file")
    p.add_argument("--model", help="a checkpoint directory or GGUF file to check the templates against")
    p.add_argument("--strict", action="store_true", help="a hyperparameter key no method or EasyEdit reads is an error")
    partial_arg(p)


def run_validate(args) -> int:
    from ..arch.validate import validate_file

    problems = validate_file(args.file, model_path=args.model, allow_partial=args.allow_partial_weights, strict=args.strict)
    if problems:
        print(problems, file=sys.stderr)
        return 2
    print(f"{args.file}: valid")
    return 0


COMMANDS = [Command('validate', run_validate, arguments,
        help="check an architecture declaration or a hyperparameter file")]
