"""Every batch of a stream, undoable bit for bit.

Floating-point subtraction does not undo an addition exactly, so nothing is ever subtracted. The ledger keeps the
original of each weight the stream touched (as it was before the weight's first batch) and each batch's delta in
the edit's own wide dtype (``EditResult.deltas``: one step wider than the weight, so ``(before + delta)`` rounded to
the weight's dtype is the weight after the batch, exactly). The weights after batch k are rebuilt from the
originals by adding the deltas of batches 1..k in order, in the same dtypes as when they were first applied. Where
a weight's delta would not give the weight back exactly (never seen, but checked at every batch), the batch keeps
that weight itself instead.

A stream that keeps only its last batches undoable folds the older ones into a base: the touched weights as they
were after batch ``base_at``, kept whole, from which the later batches' deltas are added. A folded batch keeps its
carried keys (the carried state is rebuilt from every batch's keys) and drops its deltas.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..editing.result import host_copy

DELTA, SNAPSHOT, KEYS = "delta/", "weight/", "keys/"


@dataclass
class Batch:
    """One applied batch: its request count, and its tensors (held in memory, or in its file of a saved stream)."""
    number: int                                   # 1-based position in the stream
    requests: int
    weights: list[str]                            # the weights it changed
    id: str = field(default_factory=lambda: secrets.token_hex(4))
    tensors: dict[str, torch.Tensor] | None = None  # DELTA/SNAPSHOT/KEYS + name -> tensor
    source: Path | None = None                    # a saved file holding the same tensors
    folded: bool = False                          # its deltas are in the ledger's base; only its keys are kept

    @property
    def file_name(self) -> str | None:
        """Where a saved stream keeps its tensors; None for a folded batch that carried no keys."""
        if self.folded:
            return None if self.tensors == {} else f"batches/{self.number:05d}-{self.id}-keys.safetensors"
        return f"batches/{self.number:05d}-{self.id}.safetensors"

    def load(self) -> dict[str, torch.Tensor]:
        if self.tensors is not None:
            return self.tensors
        if self.source is None:
            return {}
        from safetensors.torch import load_file

        return load_file(str(self.source))

    def keys(self) -> dict[str, torch.Tensor]:
        return {n[len(KEYS):]: t for n, t in self.load().items() if n.startswith(KEYS)}


class Ledger:
    def __init__(self):
        self.originals: dict[str, torch.Tensor] = {}   # name -> the weight before the stream's first change to it
        self.batches: list[Batch] = []
        self.base: dict[str, torch.Tensor] = {}        # name -> the weight after batch base_at (folded batches')
        self.base_at = 0
        self.base_id = ""                              # names the base's file in a saved stream

    @torch.no_grad()
    def record(self, model, result, keys: dict[str, torch.Tensor]) -> Batch:
        """Keep a batch just applied through ``result`` (an EditResult whose originals are the weights before it)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, delta in result.deltas.items():
            weight = model.get_parameter(name)
            before = result.originals[name]
            # Checked where the weight lives: a GPU weight is not copied to the CPU and summed there every batch.
            rebuilt = (before.to(weight.device, delta.dtype, non_blocking=True)
                       + delta.to(weight.device, non_blocking=True)).to(weight.dtype)
            if torch.equal(rebuilt, weight.detach()):
                tensors[DELTA + name] = delta.contiguous()
            else:
                tensors[SNAPSHOT + name] = host_copy(weight)
            self.originals.setdefault(name, before)
        tensors.update({KEYS + n: k.contiguous() for n, k in keys.items()})
        batch = Batch(number=len(self.batches) + 1, requests=len(result.requests), weights=sorted(result.deltas),
                      tensors=tensors)
        self.batches.append(batch)
        return batch

    @torch.no_grad()
    def record_folded(self, model, result, keys: dict[str, torch.Tensor]) -> Batch:
        """Keep a batch no restore will take back (``undo_depth=0``, every earlier batch folded already): its keys,
        and the weights it left as the new base. Its deltas are neither copied nor checked, since nothing rebuilds
        from them."""
        for name in result.deltas:
            self.originals.setdefault(name, result.originals[name])
            self.base[name] = host_copy(model.get_parameter(name))
        batch = Batch(number=len(self.batches) + 1, requests=len(result.requests), weights=sorted(result.deltas),
                      tensors={KEYS + n: k.contiguous() for n, k in keys.items()}, folded=True)
        self.batches.append(batch)
        self.base_at, self.base_id = len(self.batches), secrets.token_hex(4)
        return batch

    @torch.no_grad()
    def weights_after(self, k: int, names=None) -> dict[str, torch.Tensor]:
        """Each touched weight (CPU) as it was after batch ``k`` (0: the originals); ``k`` from ``base_at`` on."""
        if k < self.base_at:
            raise ValueError(f"batches up to {self.base_at} are folded into the base")
        names = list(self.originals) if names is None else list(names)
        current = {n: self.base.get(n, self.originals[n]).clone() for n in names}
        for batch in self.batches[self.base_at:k]:
            wanted = [n for n in batch.weights if n in current]
            if not wanted:
                continue
            tensors = batch.load()
            for name in wanted:
                if SNAPSHOT + name in tensors:
                    current[name] = tensors[SNAPSHOT + name].clone()
                else:
                    delta = tensors[DELTA + name]
                    current[name] = (current[name].to(delta.dtype) + delta).to(current[name].dtype)
        return current

    @torch.no_grad()
    def write_into(self, model, weights: dict[str, torch.Tensor]) -> None:
        for name, value in weights.items():
            model.get_parameter(name).copy_(value)

    @torch.no_grad()
    def fold(self, k: int) -> None:
        """Fold batches up to ``k`` into the base: their deltas are dropped, their keys kept."""
        if k <= self.base_at:
            return
        folded = self.batches[self.base_at:k]
        names = {n for b in self.batches[:k] for n in b.weights}
        self.base = self.weights_after(k, sorted(names))
        for batch in folded:
            batch.tensors = {n: t for n, t in batch.load().items() if n.startswith(KEYS)}
            batch.source, batch.folded, batch.id = None, True, secrets.token_hex(4)
        self.base_at, self.base_id = k, secrets.token_hex(4)

    def truncate(self, k: int) -> None:
        """Forget the batches after ``k``, and the originals of weights only they touched."""
        self.batches = self.batches[:k]
        kept = {n for b in self.batches for n in b.weights}
        self.originals = {n: t for n, t in self.originals.items() if n in kept}
