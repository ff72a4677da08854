"""The public Python API: load_model, detect, edit, edited, apply_deltas."""
from __future__ import annotations

import contextlib

from .editing import metrics
from .editing.result import EditResult, apply_deltas  # noqa: F401  (re-exported)
from .hparams import load_hparams
from .registry import get_registry
from .requests import normalise_requests


def edit(model, tok, requests, hparams, *, evaluate: bool = True, **method_options) -> EditResult:
    """Apply edits in place and return an EditResult (originals, deltas, per-request metrics).

    The edit stays applied until ``result.restore()``; metrics are measured on the edited weights.
    """
    registry = get_registry()
    hp = load_hparams(hparams, registry)
    method = registry.method(hp["alg_name"])
    spec = registry.for_model(model)
    records = normalise_requests(requests)
    result = EditResult(model=model, hparams=hp, requests=records)
    before = metrics.evaluate(model, tok, records) if evaluate else None
    try:
        answerer = method.apply(model, tok, records, hp, spec=spec, weights=result, **method_options)
    except BaseException:
        result.restore(force=True)  # never leave a half-applied edit behind
        raise
    result.answerer = answerer if answerer is not None else model
    if evaluate:
        after = metrics.evaluate(result.answerer, tok, records)
        result.metrics = metrics.compare(before, after, weights=f"edited by {method.name}, still applied")
    return result


@contextlib.contextmanager
def edited(model, tok, requests, hparams, **options):
    """``with edited(...) as result:`` the edit holds inside the block and is undone bit for bit after it."""
    result = edit(model, tok, requests, hparams, **options)
    try:
        yield result
    finally:
        if not result.restored:
            result.restore(force=True)
