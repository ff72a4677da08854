"""The run loop of `adapterkit eval`: edit, measure before and after, undo; one unit (a single edit, or a batch
of ``batch`` requests edited in one call) after another.

Everything is checked before the first write: settings, records, held-out texts, the model and its tokenizer
(and chat template), the requests against the model's positions. Then ``run.json`` records what the run is (its
settings, the model's and the data's fingerprints), and each finished unit's rows are appended to ``rows.jsonl``
in one write followed by fsync, so a kill loses at most the unit in progress. Started again with the same
``out``, a run checks that ``run.json`` matches, drops a unit whose rows were cut short, and goes on with the
units not yet done; the report is built from run.json and rows.jsonl alone, so it is the same as an
uninterrupted run's.

A unit is a list of request indices and the model is restored after each, so the units of a window of about
``BEFORE_WINDOW`` requests are all measured before their edits in one pass; with ``sequential`` the units are
applied one after another and never undone, and every earlier edit is measured again as they pile up
(sequential.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import AdapterkitError, RequestError
from .measure import MeasureSettings, generation_prompts, observe
from .rundir import FORMAT, check_out_dir, open_run, read_run_info, record_unit



@dataclass(frozen=True)
class EvalSettings:
    n: int | None = None                  # the first n records of the data file (None: all)
    batch: int = 1                        # requests per edit call: 1 is single edits
    chat: bool = False                    # prompts in the tokenizer's chat template, for the edit and the measurement
    max_new_tokens: int = 32
    fluency_max_new_tokens: int = 100
    normalise_loc: bool = False
    heldout: str | None = None            # a file of held-out texts; None: the shipped default (heldout.py)
    sequential: bool = False              # batches kept, one on top of the last (sequential.py)
    every: int | None = None              # sequential: measure every earlier edit again after this many (None: batch)
    compile_generation: bool = False      # greedy answers through a static cache, compiled on CUDA (generation.py)

    @property
    def mode(self) -> str:
        return "sequential" if self.sequential else "single" if self.batch == 1 else "batch"

    def measure_settings(self) -> MeasureSettings:
        return MeasureSettings(max_new_tokens=self.max_new_tokens, fluency_max_new_tokens=self.fluency_max_new_tokens,
                               compile_generation=self.compile_generation)

    def check(self) -> None:
        for name, value in (("--n", self.n), ("--batch", self.batch), ("--max-new-tokens", self.max_new_tokens),
                            ("--fluency-max-new-tokens", self.fluency_max_new_tokens), ("--every", self.every)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise AdapterkitError(f"{name} {value}: must be a whole number of at least 1", fix=f"pass {name} 1 or more")
        if self.every is not None and not self.sequential:
            raise AdapterkitError("--every: measures a sequential run's earlier edits, and --sequential is not given",
                                  fix="add --sequential, or leave --every out")


def plan_units(count: int, batch: int) -> list[list[int]]:
    """Request indices of each unit, in order: consecutive slices of ``batch``."""
    return [list(range(lo, min(lo + batch, count))) for lo in range(0, count, batch)]


BEFORE_WINDOW = 32  # requests measured before their edits in one pass


def plan_windows(units: list[list[int]], size: int) -> list[list[int]]:
    """Consecutive units grouped until a group holds ``size`` requests or more. Every edit is undone before the
    next, so the units of a window share the unedited weights, and measuring them together before any of their
    edits batches the generation of many requests at the cost of one."""
    windows: list[list[int]] = [[]]
    held = 0
    for u, unit in enumerate(units):
        if held >= size:
            windows.append([])
            held = 0
        windows[-1].append(u)
        held += len(unit)
    return [w for w in windows if w]


@dataclass
class Prepared:
    """A run, checked and loaded, before anything is written."""
    model: object
    tok: object
    requests: list            # as edited and measured (in the chat template where --chat)
    method_settings: object
    run_info: dict            # what run.json holds
    heldout: list[str]
    wrap: Callable[[str], str] | None


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def prepare(model_path, hparams, data, settings: EvalSettings, *, device=None, allow_partial: bool = False,
            archive=None, say=lambda line: None, placement: dict | None = None) -> Prepared:
    from ..arch.registry import get_registry
    from ..checkpoints.loading import load_model
    from ..checkpoints.placement import describe_placement
    from ..api import check_edit_inputs
    from ..requests import load_requests
    from ..settings.hparams import load_settings
    from . import chat, heldout
    from .fingerprints import data_fingerprint, model_fingerprint, package_versions

    settings.check()
    registry = get_registry()
    method_settings = load_settings(hparams, registry)
    requests = load_requests(data, normalise_loc=settings.normalise_loc)
    if settings.n is not None:
        if settings.n > len(requests):
            raise RequestError(f"{data}: --n {settings.n}, but the file holds {len(requests)} records",
                               fix=f"pass --n {len(requests)} or fewer, or leave --n out to evaluate them all")
        requests = requests[: settings.n]
    for request in requests:
        generation_prompts(request)
    texts = heldout.read_texts(settings.heldout) if settings.heldout else heldout.default_texts()
    source = settings.heldout or heldout.DEFAULT_SOURCE
    texts = heldout.without_subjects(texts, (r.subject for r in requests))
    heldout.check_texts_left(texts, source)

    say(f"loading {model_path}")
    model, tok = load_model(model_path, device=device, allow_partial=allow_partial, **(placement or {}))
    if tok is None:
        raise AdapterkitError(f"{model_path}: no tokenizer files found",
                              fix="copy the tokenizer files (tokenizer.json / tokenizer_config.json) into the checkpoint directory")
    wrap = None
    if settings.chat:
        chat.require_chat_template(tok, model_path)
        requests = [chat.wrap_request(tok, r) for r in requests]
        wrap = lambda prompt: chat.wrap_prompt(tok, prompt)  # noqa: E731
    spec = registry.for_model(model)
    method = registry.method(method_settings.alg_name)
    hp = method_settings.to_dict()
    check_edit_inputs(model, tok, requests, method_settings, hp, spec, method, str(hparams), str(data))
    say("fingerprinting the model's weights and the data")
    identity = {
        "settings": {**asdict(settings), "mode": settings.mode},
        "method": method.name,
        "hparams": hp,
        "archive": str(archive) if archive else None,
        "chat_template": settings.chat,
        "model": model_fingerprint(model),
        "data": {k: v for k, v in data_fingerprint(data).items() if k != "path"},
        "requests": len(requests),
        "heldout": {"source": source, "sha256": heldout.texts_digest(texts), "count": len(texts)},
    }
    environment = {"model_path": str(model_path), "hparams_path": str(hparams), "data_path": str(data),
                   "device": describe_placement(model), "versions": package_versions()}
    run_info = {"format": FORMAT, "identity": _jsonable(identity), "environment": environment}
    return Prepared(model, tok, requests, method_settings, run_info, texts, wrap)


# --- the loop -------------------------------------------------------------------------------------
def run_eval(model_path, hparams, data, out, settings: EvalSettings = EvalSettings(), *, device=None,
             allow_partial: bool = False, archive=None, say=None, on_unit_done=None, placement: dict | None = None) -> dict:
    """Run (or resume) an evaluation into ``out``; returns the report (also written as out/report.json).
    ``on_unit_done(unit, rows)`` is called after each unit's rows are written. ``placement``: ``load_model``'s
    ``device_map`` / ``max_memory`` / ``offload_folder``."""
    from ..editing.progress import counter
    from .metrics import perplexity
    from .report import write_run_report

    say = say or (lambda line: None)
    out = Path(out)
    check_out_dir(out)
    prepared = prepare(model_path, hparams, data, settings, device=device, allow_partial=allow_partial,
                       archive=archive, say=say, placement=placement)
    requests, model, tok = prepared.requests, prepared.model, prepared.tok
    units = plan_units(len(requests), settings.batch)
    rows = open_run(out, prepared.run_info, units, say)
    done = {row["unit"] for row in rows}
    measure = settings.measure_settings()
    baseline = perplexity(model, tok, prepared.heldout)
    if settings.sequential:
        from .sequential import run_sequential

        rows = run_sequential(prepared, out, settings, units, rows, hparams=hparams, data=data, archive=archive,
                              say=say, on_unit_done=on_unit_done)
        rows.sort(key=lambda row: row["index"])
        return write_run_report(out, read_run_info(out), rows)
    bar = counter(len(requests), desc="eval", unit="edit")
    bar.update(len(rows))
    try:
        for window in plan_windows(units, BEFORE_WINDOW):
            if all(u in done for u in window):
                continue
            # The same window is measured whole on resuming, so its rows match an uninterrupted run's bit for bit.
            measured = observe(model, tok, [requests[i] for u in window for i in units[u]], measure, prepared.wrap)
            for u in window:
                before, measured = measured[: len(units[u])], measured[len(units[u]):]
                if u in done:
                    continue
                rows += _edit_and_measure(prepared, out, units[u], u, before, baseline, measure, hparams=hparams,
                                          data=data, archive=archive, bar=bar, on_unit_done=on_unit_done)
    finally:
        bar.close()
    rows.sort(key=lambda row: row["index"])
    return write_run_report(out, read_run_info(out), rows)


def _edit_and_measure(prepared: Prepared, out: Path, indices: list[int], u: int, before: list[dict], baseline: float,
                      measure: MeasureSettings, *, hparams, data, archive, bar, on_unit_done) -> list[dict]:
    """One unit: edited, measured after, its rows written, undone."""
    from .. import api
    from .metrics import perplexity

    model, tok = prepared.model, prepared.tok
    unit = [prepared.requests[i] for i in indices]
    with api.edited(model, tok, unit, prepared.method_settings, evaluate=False, archive=archive,
                    hparams_source=str(hparams), requests_source=str(data)) as result:
        after = observe(result.answerer, tok, unit, measure, prepared.wrap)
        edited_perplexity = perplexity(result.answerer, tok, prepared.heldout)
    unit_rows = record_unit(out, unit, indices, u, before, after, baseline, edited_perplexity)
    bar.update(len(unit_rows))
    if on_unit_done is not None:
        on_unit_done(u, unit_rows)
    return unit_rows
