"""Every metric of a set of requests on the weights now in a model (``observe``), and the per-request rows that
compare two such observations, before and after an edit (``compare``).

Metric names (docs/evaluation.md says how each is measured):

- ``teacher_forced.rewrite_acc``, ``.rephrase_acc``, ``.portability_acc/<group>``; after an edit also
  ``.locality_acc`` and ``.locality_acc/<group>`` (EasyEdit's, from ``adapterkit.editing.metrics``);
- ``prob.efficacy_score``, ``prob.paraphrase_score``, ``prob.neighborhood_score`` (ROME / MEMIT's comparisons of
  the new and the true target's probabilities; None without a true target), and ``prob.rewrite_new_token_prob``
  (the new target's per-token probability after the prompt, a geometric mean: the number a stream's collapse shows
  in);
- ``greedy.rewrite_exact_match``, ``.rewrite_starts_with``, ``.rephrase_exact_match``, ``.rephrase_starts_with``;
  after an edit also ``greedy.locality_unchanged`` (the answer after the edit is the answer before);
- ``fluency.ngram_entropy`` of the greedy continuations of a record's ``generation_prompts``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..editing import metrics as easyedit_metrics
from ..errors import AdapterkitError, RequestError
from ..requests import EditRequest
from .generation import greedy_generate
from .metrics import exact_match, ngram_entropy, starts_with


@dataclass(frozen=True)
class MeasureSettings:
    max_new_tokens: int = 32               # greedy answers: also stop at EOS or a newline
    fluency_max_new_tokens: int = 100      # fluency continuations: stop at EOS only
    batch_size: int = 32
    compile_generation: bool = False       # greedy_generate's ``compiled``


def generation_prompts(request: EditRequest) -> list[str]:
    """The record's ``generation_prompts`` (CounterFact's fluency prompts), refused unless a list of strings."""
    value = request.extra.get("generation_prompts")
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise RequestError(f"{request.origin or 'request'}: field 'generation_prompts' must be a list of non-empty strings",
                           fix="write generation_prompts as CounterFact does: [\"...\", \"...\"], or delete the field")
    return value


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _locality_answer(request: EditRequest, j: int) -> str | None:
    return request.locality_ground_truths[j] if request.locality_ground_truths else request.ground_truth


def max_positions(model) -> int | None:
    """The model's position limit, as its declaration names it (None where it names none)."""
    from ..arch.registry import get_registry

    try:
        return get_registry().for_model(model).max_positions(model.config)
    except (AdapterkitError, AttributeError):  # a method's wrapper (SERAC) or a model no declaration fits: not capped
        return None


def observe(model, tok, requests: Sequence[EditRequest], settings: MeasureSettings,
            wrap: Callable[[str], str] | None = None) -> list[dict]:
    """Per request: its metrics on the weights now in ``model`` (``metrics``), the raw predictions that locality
    compares (``locality_predictions``) and the generated texts (``generations``). ``wrap``: how a fluency prompt
    is put to the model (the chat template), which the requests' own prompts already are."""
    jobs: list[tuple[int, str, int, str, str]] = []  # (request, kind, k, prompt, target) whose NLL is compared
    for i, r in enumerate(requests):
        if r.ground_truth is None:
            continue
        for kind, prompts in (("rewrite", [r.prompt]), ("rephrase", r.rephrase_prompts)):
            for k, p in enumerate(prompts):
                jobs += [(i, kind + "/new", k, p, r.target_new), (i, kind + "/true", k, p, r.ground_truth)]
    for i, r in enumerate(requests):
        for k, p in enumerate(r.locality_prompts):
            answer = _locality_answer(r, k)
            if answer is not None and answer.strip() != r.target_new.strip():
                jobs += [(i, "locality/new", k, p, r.target_new), (i, "locality/true", k, p, answer)]
    # One teacher-forced pass reads both the accuracies' pairs and the probability comparisons' pairs.
    scored = easyedit_metrics.teacher_forced(
        model, tok, easyedit_metrics.evaluation_pairs(requests) + [(p, t) for *_, p, t in jobs],
        batch_size=settings.batch_size)
    teacher = easyedit_metrics.evaluate(model, tok, requests, scored=scored)
    nll = {(i, kind, k): scored[(p, t)].nll for i, kind, k, p, t in jobs}

    answer_prompts = [(i, kind, p) for i, r in enumerate(requests)
                      for kind, prompts in (("rewrite", [r.prompt]), ("rephrase", r.rephrase_prompts),
                                            ("locality", r.locality_prompts)) for p in prompts]
    limit = max_positions(model)
    decoding = {"batch_size": settings.batch_size, "max_positions": limit, "compiled": settings.compile_generation}
    answers = greedy_generate(model, tok, [p for _, _, p in answer_prompts], max_new_tokens=settings.max_new_tokens,
                              **decoding)
    fluency_prompts = [(i, p) for i, r in enumerate(requests) for p in generation_prompts(r)]
    continuations = greedy_generate(model, tok, [wrap(p) if wrap else p for _, p in fluency_prompts],
                                    max_new_tokens=settings.fluency_max_new_tokens, stop_at_newline=False,
                                    **decoding) if fluency_prompts else []

    out = []
    for i, r in enumerate(requests):
        generated = {"rewrite": None, "rephrase": [], "locality": [], "fluency": []}
        for (j, kind, _), g in zip(answer_prompts, answers):
            if j == i:
                if kind == "rewrite":
                    generated["rewrite"] = g.text
                else:
                    generated[kind].append(g.text)
        for (j, _), g in zip(fluency_prompts, continuations):
            if j == i:  # ROME scores the prompt with its continuation; in a chat template, the answer alone
                generated["fluency"].append(g.text if wrap else g.full_text)
        wins = lambda kind, count, new_wins: [  # noqa: E731
            (nll[(i, kind + "/new", k)] < nll[(i, kind + "/true", k)]) == new_wins
            for k in range(count) if (i, kind + "/new", k) in nll]
        efficacy, paraphrase = wins("rewrite", 1, True), wins("rephrase", len(r.rephrase_prompts), True)
        neighbourhood = wins("locality", len(r.locality_prompts), False)
        row = {
            "teacher_forced.rewrite_acc": teacher[i]["rewrite_acc"],
            "teacher_forced.rephrase_acc": teacher[i]["rephrase_acc"],
            **{f"teacher_forced.portability_acc/{g}": v for g, v in teacher[i]["portability_acc"].items()},
            "prob.efficacy_score": _mean(map(float, efficacy)),
            "prob.paraphrase_score": _mean(map(float, paraphrase)),
            "prob.neighborhood_score": _mean(map(float, neighbourhood)),
            "prob.rewrite_new_token_prob": (math.exp(-nll[(i, "rewrite/new", 0)])
                                            if (i, "rewrite/new", 0) in nll else None),
            "greedy.rewrite_exact_match": float(exact_match(generated["rewrite"], r.target_new)),
            "greedy.rewrite_starts_with": float(starts_with(generated["rewrite"], r.target_new)),
            "greedy.rephrase_exact_match": _mean(float(exact_match(a, r.target_new)) for a in generated["rephrase"]),
            "greedy.rephrase_starts_with": _mean(float(starts_with(a, r.target_new)) for a in generated["rephrase"]),
            "fluency.ngram_entropy": _mean(ngram_entropy(t) for t in generated["fluency"]),
        }
        out.append({"metrics": row, "generations": generated,
                    "locality_predictions": {"flat": teacher[i]["locality_predictions"],
                                             "groups": teacher[i]["locality_group_predictions"]}})
    return out


def locality_metrics(before: dict, after: dict) -> dict:
    """What only a before and an after together measure: predictions and answers unchanged by the edit."""
    row = {"teacher_forced.locality_acc": easyedit_metrics.unchanged_share(before["locality_predictions"]["flat"],
                                                                           after["locality_predictions"]["flat"])}
    for group, predictions in after["locality_predictions"]["groups"].items():
        row[f"teacher_forced.locality_acc/{group}"] = easyedit_metrics.unchanged_share(
            before["locality_predictions"]["groups"][group], predictions)
    pairs = list(zip(before["generations"]["locality"], after["generations"]["locality"]))
    row["greedy.locality_unchanged"] = _mean(float(exact_match(post, pre)) for pre, post in pairs)
    return row


def compare(requests: Sequence[EditRequest], before: list[dict], after: list[dict]) -> list[dict]:
    """Per request: the metrics before and after the edit, and the texts generated both times."""
    rows = []
    for r, pre, post in zip(requests, before, after):
        rows.append({
            "case_id": r.case_id, "origin": r.origin, "subject": r.subject, "prompt": r.prompt,
            "target_new": r.target_new, "ground_truth": r.ground_truth,
            "metrics": {"before": pre["metrics"], "after": {**post["metrics"], **locality_metrics(pre, post)}},
            "generations": {"before": pre["generations"], "after": post["generations"]},
        })
    return rows
