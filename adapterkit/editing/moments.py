"""Running sums of k k^T over batches of keys, in float64, for the second-moment statistics."""
from __future__ import annotations

import torch

from . import speedups

FOLD_EVERY = 16  # float32 partial sums of at most this many batches, then added to the float64 total
_HALF = (torch.bfloat16, torch.float16)


class SecondMomentSum:
    """Sum of ``keys.T @ keys`` over the batches given to ``add``, in float64 (``total()``).

    Straightforward path: each batch's keys in ``dtype`` (float32 by default), the product added in float64.
    With the exact speed-ups, products accumulate in a float32 partial sum folded into float64 every
    ``FOLD_EVERY`` batches, and 16-bit keys on a GPU are multiplied as they are, on tensor cores, with float32
    results: the products of 16-bit numbers are exact in float32, so this loses nothing the model had.
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.sum: torch.Tensor | None = None
        self.partial: torch.Tensor | None = None
        self.pending = 0

    def add(self, keys: torch.Tensor) -> None:
        if not speedups.active() or self.dtype not in (torch.float32, *_HALF):
            product = (keys.to(self.dtype).T @ keys.to(self.dtype)).double()
            self.sum = product if self.sum is None else self.sum.add_(product)
            return
        if keys.is_cuda and keys.dtype in _HALF and self.dtype == torch.float32:
            product = torch.mm(keys.T, keys, out_dtype=torch.float32)
        else:
            keys = keys.to(self.dtype)
            product = (keys.T @ keys).float()
        self.partial = product if self.partial is None else self.partial.add_(product)
        self.pending += 1
        if self.pending == FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if self.partial is not None:
            self.sum = self.partial.double() if self.sum is None else self.sum.add_(self.partial)
        self.partial, self.pending = None, 0

    def total(self) -> torch.Tensor | None:
        self._fold()
        return self.sum
