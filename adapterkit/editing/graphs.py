"""A step of GPU work replayed as a CUDA graph: one launch from the host instead of thousands of kernels, and one
capture for every later call with the same shapes.

An optimisation step on a 7B model launches a few thousand small kernels; with one request the host takes
longer to launch them than the GPU to run them. ``ReplayedStep`` runs the step eagerly once (which warms up the
libraries it calls), captures the next call as a graph and replays that graph for every later call. A graph
reads and writes the same memory at every replay, so the step keeps its inputs in place: everything it reads
besides the model's own weights is listed in ``state``, and it leaves gradients to the capture (set to None
before its backward). Where capture fails (an operation that waits for the host, say), every call runs eagerly.

Capturing costs as much as a few steps, so a captured step is kept per model and ``signature`` (the shapes,
the settings baked into its kernels, the model's weights' addresses), and a later call with the same signature
copies its own state into the kept one's tensors and replays that graph without any eager step. It is kept only
where the eager step was seen reading nothing outside its state, the model's parameters and buffers and what it
made itself (``unlisted_reads``): a step that read anything else would replay on a stale copy of it. The kept
graphs' memory pools hold at most ``KEPT_MEMORY_FRACTION`` of the device's memory (the least recently used go
first); ``clear()`` drops them all.
"""
from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

log = logging.getLogger(__name__)
KEPT_PER_MODEL = 8
KEPT_MEMORY_FRACTION = 0.1  # of the device's memory, held by the kept graphs' memory pools at most

_kept: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class Captured:
    """A captured step: ``replay()`` runs it again on ``state`` (the tensors it was captured with); its memory
    pool holds ``footprint`` bytes."""

    def __init__(self, replay: Callable[[], None], state: Sequence[torch.Tensor], footprint: int = 0):
        self.replay, self.state, self.footprint = replay, list(state), footprint


def capture(step: Callable[[], object]) -> tuple[Callable[[], None], int]:
    """``step`` captured as a CUDA graph, not run: (the graph's replay, the bytes its memory pool holds, or -1)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay, _pool_bytes(graph.pool())


def _pool_bytes(pool) -> int:
    try:
        segments = torch.cuda.memory._snapshot()["segments"]
        return sum(s["total_size"] for s in segments if tuple(s.get("segment_pool_id", ())) == tuple(pool))
    except Exception:  # noqa: BLE001  (a private API: without it, nothing is kept)
        return -1


def _memory_budget() -> int:
    return int(KEPT_MEMORY_FRACTION * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


def can_capture(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def clear() -> None:
    """Drop every kept graph (and the memory its pool holds)."""
    _kept.clear()


def weights_signature(model) -> tuple:
    """Where the model's weights live: a kept graph reads them there, so a moved or reloaded model captures anew."""
    return tuple(p.data_ptr() for p in model.parameters()) + tuple(b.data_ptr() for b in model.buffers())


class ReplayedStep:
    """``step`` run eagerly ``warmup`` times, then captured and replayed; with ``model`` and ``signature`` the
    capture is kept for later steps of the same signature (see the module's docstring)."""

    def __init__(self, step: Callable[[], object], state: Sequence[torch.Tensor], *, model=None,
                 signature: Hashable = None, warmup: int = 1):
        self.step, self.state, self.warmup = step, list(state), warmup
        self.model, self.signature = model, signature
        self.calls, self.eager = 0, False
        self.captured: Captured | None = None
        self.reads_only_its_state = False
        kept = _kept.get(model, {}).get(signature) if model is not None and signature is not None else None
        if kept is not None:
            _kept[model].move_to_end(signature)
            with torch.no_grad():
                for mine, theirs in zip(self.state, kept.state):
                    theirs.copy_(mine)
            self.captured = kept
        self.reused = kept is not None

    def __call__(self) -> None:
        self.calls += 1
        if self.captured is not None:
            self.captured.replay()
            return
        if self.eager or self.calls <= self.warmup:
            if self.calls == 1 and self.signature is not None:
                self.reads_only_its_state = not unlisted_reads(self.step, self.state, self.model)
            else:
                self.step()
            return
        try:
            replay, footprint = capture(self.step)
        except Exception as exc:  # noqa: BLE001  (any capture failure leaves the eager step, which is exact)
            log.debug("the optimisation step cannot be captured as a CUDA graph (%s); it runs eagerly", exc)
            self.eager = True
            torch.cuda.synchronize()
            self.step()
            return
        self.captured = Captured(replay, self.state, footprint)
        if self.reads_only_its_state and 0 <= footprint <= _memory_budget():
            self._keep()
        replay()

    def _keep(self) -> None:
        kept = _kept.setdefault(self.model, OrderedDict())
        kept[self.signature] = self.captured
        budget = _memory_budget()
        while len(kept) > KEPT_PER_MODEL or sum(c.footprint for c in kept.values()) > budget:
            kept.popitem(last=False)

    def current(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor that holds ``tensor``'s (a state tensor's) value now: its kept counterpart after a reuse."""
        if self.captured is None or self.captured.state is self.state:
            return tensor
        index = next(i for i, t in enumerate(self.state) if t is tensor)
        return self.captured.state[index]


class _Reads(TorchDispatchMode):
    """Storages read by the operations run inside it that none of them made."""

    def __init__(self):
        super().__init__()
        self.made: set[int] = set()
        self.outside: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor):
                address = _storage(leaf)
                if address and address not in self.made:
                    self.outside.add(address)
        out = func(*args, **(kwargs or {}))
        self.made.update(_storage(leaf) for leaf in tree_leaves(out) if isinstance(leaf, torch.Tensor))
        return out


def _storage(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without a storage of their own
        return 0


def unlisted_reads(step: Callable[[], object], state: Sequence[torch.Tensor], model) -> set[int]:
    """Run ``step`` once and return the storages it read that are neither in ``state``, nor the model's
    parameters or buffers, nor made by the step itself."""
    allowed = {_storage(t) for t in state}
    allowed |= {_storage(p) for p in model.parameters()} | {_storage(b) for b in model.buffers()}
    with _Reads() as reads:
        step()
    unlisted = reads.outside - allowed
    if unlisted:
        log.debug("the optimisation step reads %d tensors outside its state; its graph is not kept", len(unlisted))
    return unlisted
