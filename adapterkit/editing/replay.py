"""Replaying decoder blocks whose outputs a loop of forwards cannot change.

Target values are optimised with deltas added at one layer; the blocks below it see the same batch at every
step and give the same outputs. ``BlockReplay`` records those outputs in one forward and then makes each such
block return its recording instead of running, so a step costs only the layers the deltas reach.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Sequence

import torch


def _each_tensor(value, fn):
    """``value`` (a tensor, or a tuple or list holding some) with ``fn`` applied to each tensor in it."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_each_tensor(v, fn) for v in value)
    return value


class BlockReplay:
    """Records decoder blocks' outputs in one forward, and replays them: value optimisation replays the blocks
    below the edit layer, causal tracing the corrupted run's blocks below the restored state."""

    def __init__(self, model, blocks: Sequence[str]):
        self.model, self.blocks = model, list(blocks)
        self.outputs: dict[str, object] = {}
        self.calls: Counter[str] = Counter()  # a block that ran more than once per forward cannot be replayed

    def tensors(self) -> list[torch.Tensor]:
        """The recorded outputs' tensors, which a replayed forward reads."""
        found: list[torch.Tensor] = []
        for output in self.outputs.values():
            _each_tensor(output, found.append)
        return found

    def map_outputs(self, fn) -> None:
        """Replace each recorded tensor ``t`` by ``fn(t)``."""
        self.outputs = {name: _each_tensor(output, fn) for name, output in self.outputs.items()}

    @contextlib.contextmanager
    def recording(self):
        """Record a copy of each block's output in the forwards run inside the block (a copy: the blocks above may
        change it in place)."""
        def hook(name):
            def fn(module, args, output):
                self.outputs[name] = _each_tensor(output, lambda t: t.detach().clone())
                self.calls[name] += 1
            return fn
        handles = [self.model.get_submodule(b).register_forward_hook(hook(b)) for b in self.blocks]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def replaying(self, only: Sequence[str] | None = None, repeat: int = 1):
        """Each recorded block (of ``only``, where given) returns its recording (the last one a copy, so nothing
        downstream can change the recording in place) without running; the blocks run again after. ``repeat``:
        each recorded tensor repeated that many times along the batch."""
        recorded = [b for b in self.blocks if b in self.outputs and (only is None or b in only)]
        last = recorded[-1] if recorded else None
        modules = {b: self.model.get_submodule(b) for b in recorded}
        own = {b: m.__dict__["forward"] for b, m in modules.items() if "forward" in m.__dict__}  # e.g. accelerate's hooks
        for name, module in modules.items():
            output = self.outputs[name] if repeat == 1 else _each_tensor(
                self.outputs[name], lambda t: t.repeat(repeat, *([1] * (t.dim() - 1))))
            module.forward = (lambda *a, _o=output, **k: _each_tensor(_o, torch.Tensor.clone)) if name == last else (lambda *a, _o=output, **k: _o)
        try:
            yield self
        finally:
            for name, module in modules.items():
                if name in own:
                    module.forward = own[name]
                else:
                    del module.forward
