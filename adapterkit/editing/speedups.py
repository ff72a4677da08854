"""Exact speed-ups, on by default, and the switch that turns them off to time or check the straightforward path.

The switch is read once where work starts, never inside an algorithm: an edit builds its value optimiser
(``values.value_optimiser()``: ``FastValues`` or ``StraightforwardValues``) and a statistics pass its sums
(``moments.SecondMomentSum(fast=...)``) from it, and the whole edit or pass runs what was built.

Each one computes the same thing as the straightforward path, up to float rounding (tests/test_speedups.py):
- value optimisation replays the outputs of the decoder blocks below the value point, which the deltas
  cannot change, instead of recomputing them at every step (``replay.py``);
- it keeps each row's keys and values before the looked-up token from the one forward of the whole rows that
  gives the reference outputs, and steps only the rest (``prefix.py``; checked once per model against the whole
  rows); ROME reads its key (compute_u) and the rewritten module's current input and output from that forward too;
- a step (forward, backward, Adam's update, the clamp, the stop of settled requests) runs on the device without
  waiting for the host, which reads each step's "all settled?" while the next one runs;
- on a GPU, that step is captured once as a CUDA graph and replayed (``graphs.py``): the same kernels on the same
  tensors, launched without the host's per-kernel overhead. Captures are kept per model and shapes, and token
  widths are padded a little (masked pads), so that later edits replay one without capturing anew;
- whether ``lm_head`` can run on the loss positions only is checked once per model and head, not per call;
- statistics of 16-bit models multiply their (already 16-bit) keys on tensor cores with float32 results and
  accumulation, and fold the float32 running sum into the float64 total every few batches.

Not switched here, because nothing in it is approximate: batches go to a GPU from page-locked memory
(``tokens.moved_together``), so the statistics loop tokenises the next batch while the GPU works.
"""
from __future__ import annotations

import contextlib

_enabled = True


def active() -> bool:
    return _enabled


@contextlib.contextmanager
def enabled(on: bool = True):
    """``with speedups.enabled(False):`` edits and statistics passes started inside the block run the
    straightforward path."""
    global _enabled
    before, _enabled = _enabled, on
    try:
        yield
    finally:
        _enabled = before
