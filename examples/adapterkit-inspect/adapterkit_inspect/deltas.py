"""Reading a deltas file and describing each weight's update."""
from __future__ import annotations

from pathlib import Path

from adapterkit.errors import AdapterkitError


def read_deltas(path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise AdapterkitError(f"{path}: no such deltas file", fix="give the file `adapterkit edit --deltas-only --out FILE` wrote")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AdapterkitError(f"{path}: not a safetensors deltas file ({exc})",
                              fix="give the file `adapterkit edit --deltas-only --out FILE` wrote") from None


def describe(deltas: dict) -> list[dict]:
    import torch

    rows = []
    for name, delta in sorted(deltas.items()):
        matrix = delta.float().reshape(delta.shape[0], -1) if delta.dim() > 1 else delta.float()[None]
        rows.append({"weight": name, "shape": list(delta.shape), "norm": float(matrix.norm()),
                     "rank": int(torch.linalg.matrix_rank(matrix))})
    return rows
