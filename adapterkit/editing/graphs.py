"""A step of GPU work replayed as a CUDA graph: one launch from the host instead of thousands of kernels.

An optimisation step on a 7B model launches a few thousand small kernels; with one request the host takes
longer to launch them than the GPU to run them. ``GraphedStep`` runs the step eagerly once (which warms up the
libraries it calls), captures the next call as a graph and replays that graph for every later call. The graph
reads and writes the same tensors at every replay, so the step must keep its inputs in place (parameters
updated in place, batches fixed) and leave gradients to the capture (set to None before the first backward).
Where capture fails (an operation that waits for the host, say), every later call runs eagerly.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)


class GraphedStep:
    def __init__(self, step: Callable[[], torch.Tensor], warmup: int = 1):
        self.step, self.warmup = step, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: torch.Tensor | None = None
        self.eager = False

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.eager or self.calls <= self.warmup:
            return self.step()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs = self.step()
        except Exception as exc:  # noqa: BLE001  (any capture failure leaves the eager step, which is exact)
            log.debug("the optimisation step cannot be captured as a CUDA graph (%s); it runs eagerly", exc)
            self.eager = True
            torch.cuda.synchronize()
            return self.step()
        self.graph, self.outputs = graph, outputs
        graph.replay()
        return outputs


def can_capture(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()
