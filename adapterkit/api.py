"""The public Python API: load_model, detect, edit, edited, apply_deltas."""
from __future__ import annotations

import contextlib
import os

from .editing import metrics
from .editing.result import EditResult, apply_deltas  # noqa: F401  (re-exported)
from .hparams import load_hparams
from .inputs import check_hparams_against_model, check_requests_fit, check_stats_inputs
from .registry import get_registry
from .requests import normalise_requests


def edit(model, tok, requests, hparams, *, evaluate: bool = True, hparams_source: str | None = None,
         requests_source: str = "request", **method_options) -> EditResult:
    """Apply edits in place and return an EditResult (originals, deltas, per-request metrics).

    The edit stays applied until ``result.restore()``; metrics are measured on the edited weights.
    Before any work, the hparams are checked against the model and the requests against its positions;
    ``hparams_source`` and ``requests_source`` name them in those messages.
    """
    registry = get_registry()
    hp = load_hparams(hparams, registry)
    method = registry.method(hp["alg_name"])
    spec = registry.for_model(model)
    records = normalise_requests(requests, requests_source)
    where = hparams_source or (str(hparams) if isinstance(hparams, (str, os.PathLike)) else "hparams")
    check_hparams_against_model(hp, model, spec, where)
    check_requests_fit(records, tok, model, spec, hp, requests_source)
    check_stats_inputs(model, spec, hp)
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
