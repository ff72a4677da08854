"""The public Python API: load_model, detect, edit, edited, train, apply_deltas."""
from __future__ import annotations

import contextlib
from os import PathLike

from .editing import metrics
from .editing.result import EditResult, apply_deltas  # noqa: F401  (re-exported)
from .errors import AdapterkitError
from .settings.hparams import load_settings
from .settings.against_model import check_hparams_against_model
from .requests import check_requests_fit
from .editing.stats import check_stats_inputs
from .arch.registry import get_registry
from .checkpoints.first_layers import FULL_DEPTH
from .checkpoints.placement import check_weights_in_memory
from .requests import normalise_requests


def edit(model, tok, requests, hparams, *, evaluate: bool = True, archive=None, hparams_source: str | None = None,
         requests_source: str = "request", say=None, carried=None, originals_on: str = "cpu") -> EditResult:
    """Apply edits in place and return an EditResult (originals, deltas, per-request metrics).

    ``hparams``: a hyperparameter file, a dict, or settings built before. ``archive``: a trained editor
    (MEND, SERAC) in place of the hparams' ``archive``. The edit stays applied until ``result.restore()``;
    metrics are measured on the edited weights. Before any work, the hparams are checked against the model
    and the requests against its positions; ``hparams_source`` and ``requests_source`` name them in messages.
    ``say(line)``, where given, is told each step as it starts (the CLI prints them). ``carried``: the state a
    method keeps across a stream's batches (``EditStream`` passes it; see ``EditMethod.carries_state``).
    ``originals_on``: where the result keeps the touched weights' originals and its deltas: ``"cpu"`` (host memory,
    the default) or ``"device"`` (each weight's own device, for a model spread over GPUs with room to spare).
    """
    say = say or (lambda line: None)
    registry = get_registry()
    settings = load_settings(hparams, registry)
    method = registry.method(settings.alg_name)
    spec = registry.for_model(model)
    records = normalise_requests(requests, requests_source)
    hp = settings.to_dict()
    check_edit_inputs(model, tok, records, settings, hp, spec, method,
                      hparams_source or (str(hparams) if isinstance(hparams, (str, PathLike)) else "hparams"), requests_source)
    result = EditResult(model=model, hparams=hp, requests=records, originals_on=originals_on)
    if evaluate:
        say(f"measuring {len(records)} request(s) before the edit")
    before = metrics.evaluate(model, tok, records) if evaluate else None
    layers = getattr(settings, "layers", None)
    say(f"editing {len(records)} request(s) with {method.name}" + (f" at layers {list(layers)}" if layers else ""))
    try:
        # only a stream passes carried, and only to a method that asked for it: other methods keep their signature
        extra = {"carried": carried} if carried is not None else {}
        answerer = method.apply(model, tok, records, settings, spec=spec, ledger=result, archive=archive, **extra)
    except BaseException:
        result.restore(force=True)  # never leave a half-applied edit behind
        raise
    result.answerer = answerer if answerer is not None else model
    if evaluate:
        say("measuring the requests after the edit")
        after = metrics.evaluate(result.answerer, tok, records)
        result.metrics = metrics.compare(before, after, weights=f"edited by {method.name}, still applied")
    return result


def check_edit_inputs(model, tok, records, settings, hp, spec, method, hparams_source: str, requests_source: str) -> None:
    """Everything an edit checks before any work: the hparams (``hp``, the settings as a dict) against the model,
    the requests against its tokenizer and positions, the weights it writes against accelerate's offloading (one
    not in memory cannot be edited), the statistics files the settings name."""
    check_whole_model(model, spec)
    check_hparams_against_model(hp, model, spec, hparams_source, method)
    check_weights_in_memory(model, settings.written_weights, f"{method.name} ({hparams_source})")
    check_requests_fit(records, tok, model, spec, settings, requests_source)
    check_stats_inputs(model, spec, settings)


def check_whole_model(model, spec) -> None:
    """A model loaded with only its first layers (for the statistics) computes other outputs than the checkpoint."""
    full = getattr(model, FULL_DEPTH, None)
    if full is not None:
        raise AdapterkitError(f"this model holds only its first {spec.num_layers(model.config)} of {full} layers "
                              "(loaded by load_first_layers for the statistics pass); an edit needs the whole model",
                              fix="load it with adapterkit.load_model")


@contextlib.contextmanager
def edited(model, tok, requests, hparams, **options):
    """``with edited(...) as result:`` the edit holds inside the block and is undone bit for bit after it."""
    result = edit(model, tok, requests, hparams, **options)
    try:
        yield result
    finally:
        if not result.restored:
            result.restore(force=True)


def train(model, tok, hparams, data, out_dir, *, val=None, resume: bool = False, device=None, progress: bool = True,
          on_step=None, normalise_loc: bool = False):
    """Train the editor of a trainable method (MEND, SERAC, a plugin's) for ``model``; the best one lands in
    ``out_dir/editor.safetensors``, which ``archive:`` then names.

    ``data`` and ``val``: a training file (CounterFact, KnowEdit or zsRE records) or a list of records. Without ``val``,
    the last tenth of the training records validates. ``resume=True`` continues an interrupted run in
    ``out_dir`` and ends with the same editor as an uninterrupted one. ``on_step(step, info)`` is called after
    each optimiser step. ``normalise_loc``: zsRE ``loc`` questions lose their ``nq question:`` prefix and end in ``?``
    (else they are kept verbatim, as EasyEdit keeps them). Returns the trainer's TrainResult.
    """
    from .editing.batches import load_sets

    registry = get_registry()
    settings = load_settings(hparams, registry)
    method = registry.method(settings.alg_name)
    if not method.trainable:
        raise AdapterkitError(f"{method.name} needs no training",
                              fix="training is for trainable methods such as MEND and SERAC; edit with adapterkit.edit directly")
    train_set, val_set = load_sets(settings, data, val, normalise_loc=normalise_loc)
    return method.train(model, tok, registry.for_model(model), settings, train_set, val_set, out_dir, resume=resume, device=device,
                        progress=progress, on_step=on_step)
