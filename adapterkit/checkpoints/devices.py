"""The one check of a requested device (``--device``, ``load_model(device=...)``, the trainer's ``device``).

A device torch cannot use is refused before any work, with a message, instead of the traceback that moving a
model to it would end in.
"""
from __future__ import annotations

from ..errors import AdapterkitError


def check_device(requested, *, origin: str = "--device", on_cpu: str = "--device cpu"):
    """``requested`` as a ``torch.device`` (None stays None); an int or digit string is that GPU, as in EasyEdit.

    ``origin`` names where the request came from in the message, ``on_cpu`` how to ask for the CPU instead.
    """
    if requested is None:
        return None
    import torch

    if (isinstance(requested, int) and not isinstance(requested, bool)) or (isinstance(requested, str) and requested.isdigit()):
        requested = f"cuda:{int(requested)}"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise AdapterkitError(f"{origin} {requested!r} is not a device torch knows",
                              fix="use cpu, cuda or cuda:N (N: the GPU's index)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AdapterkitError(f"{origin} {requested!r}: no CUDA device: torch.cuda.is_available() is False",
                                  fix=f"use {on_cpu}, or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise AdapterkitError(f"{origin} {requested!r}: no such CUDA device; torch sees {count} "
                                  f"(cuda:0 to cuda:{count - 1})", fix=f"use cuda:0 to cuda:{count - 1}, or {on_cpu}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise AdapterkitError(f"{origin} {requested!r}: no MPS device: torch.backends.mps.is_available() is False",
                              fix=f"use {on_cpu}")
    return device

