"""`adapterkit convert`: write a GGUF checkpoint as safetensors."""
from __future__ import annotations

import sys

from .command import Command


def arguments(p) -> None:
    p.add_argument("source", help="a .gguf file, or a directory holding one")
    p.add_argument("--out", required=True, help="the checkpoint directory to write")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--overwrite", action="store_true")


def run_convert(args) -> int:
    from ..checkpoints.loading import convert_gguf

    out = convert_gguf(args.source, args.out, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote a {args.dtype} safetensors checkpoint to {out}", file=sys.stderr)
    return 0


COMMANDS = [Command('convert', run_convert, arguments,
        help="write a GGUF checkpoint (dequantised) as a safetensors checkpoint directory")]
