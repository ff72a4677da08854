"""What a method keeps from one batch of a stream to the next: per weight, the keys of the earlier batches' edits.

AlphaEdit's sequential algorithm (and MEMIT or PMET with ``stream_preserve_edits``) preserves the outputs of every
earlier edit's key K_p in each later update through the second moment K_p K_p^T. The stream keeps each batch's keys
themselves (n rows per weight, small) with that batch, and the running sum of their second moments in float64;
the sum after batch k is rebuilt from batches 1..k's keys in the same order and on the same device, so a restored
or reloaded stream carries exactly what an uninterrupted one does.

Each running sum lives where ``place(weight)`` says: beside the weight, where the update is solved (a batch's fold
is then one product on the accelerator), or in host memory (an [in, in] float64 matrix per edited weight kept off
the accelerator, moved to it for every batch).
"""
from __future__ import annotations

import torch


class CarriedState:
    """The earlier batches' keys, per weight name, as the sum of their second moments; and the batch in progress.

    Methods call ``keys_moment(weight)`` (earlier batches only, never the batch in progress) and
    ``add_keys(weight, keys)``; the stream calls ``commit()`` once the batch is applied (or ``discard()``).
    """

    def __init__(self, place=None):
        self._place = place or (lambda weight: torch.device("cpu"))
        self._moments: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._pending: dict[str, list[torch.Tensor]] = {}

    # --- for methods -----------------------------------------------------------------------------
    def keys_moment(self, weight: str) -> torch.Tensor | None:
        """sum K_p^T K_p over the earlier batches' keys at ``weight`` ([in, in], float64, where ``place`` keeps it), or
        None."""
        return self._moments.get(weight)

    def add_keys(self, weight: str, keys: torch.Tensor) -> None:
        """This batch's keys [n, in] at ``weight``; they count for the batches after this one."""
        self._pending.setdefault(weight, []).append(keys.detach().float().clone())

    # --- for the stream --------------------------------------------------------------------------
    def count(self, weight: str) -> int:
        """How many earlier edits' keys are carried at ``weight``."""
        return self._counts.get(weight, 0)

    @property
    def weights(self) -> list[str]:
        return list(self._moments)

    def commit(self) -> dict[str, torch.Tensor]:
        """Fold the batch in progress into the carried moments; returns its keys per weight, on the CPU (kept with
        the batch)."""
        batch = {weight: torch.cat(parts) for weight, parts in self._pending.items()}
        self._pending = {}
        self.fold(batch)
        return {weight: keys.to("cpu") for weight, keys in batch.items()}

    def discard(self) -> None:
        self._pending = {}

    @torch.no_grad()
    def fold(self, batch_keys: dict[str, torch.Tensor]) -> None:
        """Add one batch's keys, in float64 where ``place`` keeps the sum, so it is the same whenever it is rebuilt."""
        for weight, keys in batch_keys.items():
            k = keys.to(self._place(weight), torch.float64)
            kept = self._moments.get(weight)
            self._moments[weight] = k.T @ k if kept is None else kept.addmm_(k.T, k)
            self._counts[weight] = self.count(weight) + keys.shape[0]

    @classmethod
    def rebuilt(cls, batches_keys, place=None) -> "CarriedState":
        """The state after the given batches' keys (oldest first), each sum kept where ``place`` says."""
        state = cls(place)
        for batch_keys in batches_keys:
            state.fold(batch_keys)
        return state
