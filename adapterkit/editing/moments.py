"""Running sums of k k^T over batches of keys, in float64, for the second-moment statistics."""
from __future__ import annotations

import torch

FOLD_EVERY = 16  # float32 partial sums of at most this many batches, then added to the float64 total
MIN_BLOCK = 512  # narrower column blocks cost more in launches and worse tiling than their skipped half saves
MAX_BLOCKS = 4
_HALF = (torch.bfloat16, torch.float16)


class SecondMomentSum:
    """Sum of ``keys.T @ keys`` over the batches given to ``add``, in float64 (``total()``).

    Straightforward (``fast=False``): each batch's keys in ``dtype`` (float32 by default), the product added in
    float64. With the exact speed-ups (``fast=True``; the statistics pass picks it once, from ``speedups``),
    products accumulate in a float32 partial sum folded into float64 every ``FOLD_EVERY`` batches, and 16-bit keys
    on a GPU are multiplied as they are, on tensor cores, with float32 results: the products of 16-bit numbers are
    exact in float32, so this loses nothing the model had. The sum is symmetric, so keys wider than ``2 * MIN_BLOCK`` are cut into column blocks and only the blocks on and
    above the diagonal are multiplied (10 of 16 with four blocks); ``total()`` mirrors the rest.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, *, fast: bool):
        self.dtype, self.fast = dtype, fast
        self.sum: torch.Tensor | None = None
        self.partial: torch.Tensor | None = None
        self.pending = 0
        self.bounds: list[tuple[int, int]] | None = None
        self.restored = False

    def state(self) -> dict:
        """Everything the sum holds, on the CPU: ``restore`` continues it exactly where it stood."""
        cpu = lambda t: None if t is None else t.detach().to("cpu")  # noqa: E731
        return {"sum": cpu(self.sum), "partial": cpu(self.partial), "pending": self.pending,
                "bounds": None if self.bounds is None else [list(b) for b in self.bounds]}

    def restore(self, state: dict) -> None:
        self.sum, self.partial, self.pending = state["sum"], state["partial"], int(state["pending"])
        self.bounds = None if state["bounds"] is None else [tuple(b) for b in state["bounds"]]
        self.restored = True

    def add(self, keys: torch.Tensor) -> None:
        if self.restored:  # a restored sum continues on the device of the keys, as a new one starts there
            self.sum = None if self.sum is None else self.sum.to(keys.device)
            self.partial = None if self.partial is None else self.partial.to(keys.device)
            self.restored = False
        if not self.fast or self.dtype not in (torch.float32, *_HALF):
            product = (keys.to(self.dtype).T @ keys.to(self.dtype)).double()
            self.sum = product if self.sum is None else self.sum.add_(product)
            return
        on_tensor_cores = keys.is_cuda and keys.dtype in _HALF and self.dtype == torch.float32
        if not on_tensor_cores:
            keys = keys.to(self.dtype)
        if self.bounds is None:
            self.bounds = column_blocks(keys.shape[-1])
        if self.partial is None:
            self.partial = keys.new_zeros((keys.shape[-1],) * 2, dtype=torch.float32)
        for i, (lo, hi) in enumerate(self.bounds):
            for start, end in self.bounds[i:]:
                left, right = keys[:, lo:hi], keys[:, start:end]
                block = (torch.mm(left.T, right, out_dtype=torch.float32) if on_tensor_cores
                         else (left.T @ right).float())
                self.partial[lo:hi, start:end].add_(block)
        self.pending += 1
        if self.pending == FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if self.partial is not None:
            self.sum = self.partial.double() if self.sum is None else self.sum.add_(self.partial)
        self.partial, self.pending = None, 0

    def total(self) -> torch.Tensor | None:
        self._fold()
        if self.sum is not None and self.bounds is not None:
            for i, (lo, hi) in enumerate(self.bounds):
                for start, end in self.bounds[i + 1:]:
                    self.sum[start:end, lo:hi] = self.sum[lo:hi, start:end].T
        return self.sum


def column_blocks(width: int) -> list[tuple[int, int]]:
    """Column ranges of about equal width, at least ``MIN_BLOCK`` wide, at most ``MAX_BLOCKS`` of them."""
    count = max(1, min(MAX_BLOCKS, width // MIN_BLOCK))
    edges = [round(i * width / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))
