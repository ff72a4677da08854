"""Edit metrics as EasyEdit defines them.

efficacy / generalisation: teacher-forced token accuracy of the target after the (rephrased) prompt.
portability/<group>: the same accuracy for each KnowEdit portability group's answers after its prompts.
locality (and locality/<group> for KnowEdit's groups): share of locality-prompt target tokens whose prediction
is unchanged by the edit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..requests import EditRequest, Probe
from .tokens import model_device, pad_id, padded, target_start, token_ids


def encode_pairs(tok, prompts: Sequence[str], targets: Sequence[str]):
    """Right-padded ids of prompt+target, attention mask, and each row's target token positions and ids."""
    rows, spans = [], []
    for prompt, target in zip(prompts, targets):
        full_ids = token_ids(tok, prompt + target)
        rows.append(full_ids)
        spans.append((target_start(token_ids(tok, prompt), full_ids), len(full_ids)))
    ids, mask, _ = padded(rows, pad_id(tok))
    return ids, mask, spans


@dataclass(frozen=True)
class TeacherForced:
    """One (prompt, target) pair read teacher-forced: the model's predicted id at each target position, the
    target's ids, and the mean negative log-probability of the target's tokens."""
    predicted: list[int]
    target: list[int]
    nll: float

    @property
    def accuracy(self) -> float:
        return sum(p == t for p, t in zip(self.predicted, self.target)) / max(len(self.target), 1)


Pair = tuple[str, str]


@torch.no_grad()
def teacher_forced(model, tok, pairs: Sequence[Pair], batch_size: int = 64) -> dict[Pair, TeacherForced]:
    """Each distinct (prompt, target) of ``pairs``, read in one forward pass per ``batch_size`` of them; only the
    target positions' ids and log-probabilities leave the device, not the vocabulary-wide logits."""
    unique = list(dict.fromkeys(pairs))
    device = model_device(model)
    out: dict[Pair, TeacherForced] = {}
    for lo in range(0, len(unique), batch_size):
        chunk = unique[lo: lo + batch_size]
        ids, mask, spans = encode_pairs(tok, [p for p, _ in chunk], [t for _, t in chunk])
        on_device = ids.to(device)
        logits = model(input_ids=on_device, attention_mask=mask.to(device)).logits
        predicted = logits.argmax(-1).cpu()
        nll = (-torch.stack([torch.log_softmax(logits[row, start - 1: stop - 1].float(), dim=-1).gather(
            -1, on_device[row, start:stop].unsqueeze(-1)).mean() for row, (start, stop) in enumerate(spans)])).tolist()
        for row, (pair, (start, stop)) in enumerate(zip(chunk, spans)):
            out[pair] = TeacherForced(predicted[row, start - 1: stop - 1].tolist(), ids[row, start:stop].tolist(),
                                      nll[row])
    return out


def target_predictions(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 64):
    """Per pair: (predicted ids, target ids) at the target positions, teacher-forced."""
    pairs = list(zip(prompts, targets))
    scored = teacher_forced(model, tok, pairs, batch_size)
    return [(scored[pair].predicted, scored[pair].target) for pair in pairs]


def token_accuracy(model, tok, prompts: Sequence[str], targets: Sequence[str]) -> list[float]:
    pairs = list(zip(prompts, targets))
    scored = teacher_forced(model, tok, pairs)
    return [scored[pair].accuracy for pair in pairs]


def _locality_rows(requests: Sequence[EditRequest]) -> list[tuple[int, str, str]]:
    """(request index, locality prompt, the answer whose prediction locality compares) of every locality prompt."""
    return [(i, p, (r.locality_ground_truths[j] if r.locality_ground_truths else r.target_new))
            for i, r in enumerate(requests) for j, p in enumerate(r.locality_prompts)]


def evaluation_pairs(requests: Sequence[EditRequest]) -> list[Pair]:
    """Every (prompt, target) pair ``evaluate`` reads."""
    return ([(r.prompt, r.target_new) for r in requests]
            + [(p, r.target_new) for r in requests for p in r.rephrase_prompts]
            + [(p, answer) for _, p, answer in _locality_rows(requests)]
            + [(probe.prompt, probe.answer) for groups in ("portability", "locality_groups")
               for _, _, probe in _probe_rows(requests, groups)])


def evaluate(model, tok, requests: Sequence[EditRequest], scored: dict[Pair, TeacherForced] | None = None) -> list[dict]:
    """Efficacy, generalisation, portability per group and the raw locality predictions (flat and per group) of
    each request, on the weights now in ``model``. ``scored``: ``teacher_forced`` readings that already hold
    ``evaluation_pairs(requests)`` (read here otherwise)."""
    if scored is None:
        scored = teacher_forced(model, tok, evaluation_pairs(requests))
    results = [{"rewrite_acc": scored[(r.prompt, r.target_new)].accuracy,
                "rephrase_acc": _mean(scored[(p, r.target_new)].accuracy for p in r.rephrase_prompts),
                "locality_predictions": [], "portability_acc": {}, "locality_group_predictions": {}}
               for r in requests]
    for i, p, answer in _locality_rows(requests):
        results[i]["locality_predictions"].append(scored[(p, answer)].predicted)
    for i, group, probe in _probe_rows(requests, "portability"):
        results[i]["portability_acc"].setdefault(group, []).append(scored[(probe.prompt, probe.answer)].accuracy)
    for i, group, probe in _probe_rows(requests, "locality_groups"):
        results[i]["locality_group_predictions"].setdefault(group, []).append(scored[(probe.prompt, probe.answer)].predicted)
    for row in results:
        row["portability_acc"] = {group: _mean(accs) for group, accs in row["portability_acc"].items()}
    return results


def _probe_rows(requests: Sequence[EditRequest], groups: str) -> list[tuple[int, str, Probe]]:
    """(request index, group name, probe) for every probe of the requests' ``groups`` attribute."""
    return [(i, group.name, probe) for i, r in enumerate(requests) for group in getattr(r, groups)
            for probe in group.probes]


def unchanged_share(before: Sequence[Sequence[int]], after: Sequence[Sequence[int]]) -> float | None:
    """Share of target tokens predicted the same before and after (None when there are none)."""
    same = total = 0
    for pre, post in zip(before, after):
        same += sum(a == b for a, b in zip(pre, post))
        total += len(pre)
    return same / total if total else None


def locality(before: dict, after: dict) -> float | None:
    """Share of locality target tokens predicted the same before and after."""
    return unchanged_share(before["locality_predictions"], after["locality_predictions"])


def compare(before: list[dict] | None, after: list[dict], weights: str) -> list[dict]:
    """Per request: pre/post efficacy, generalisation and portability per group, and locality (flat and per
    group), naming the weights measured. Without ``before`` (nothing to compare) locality is None."""
    rows = []
    for j, post in enumerate(after):
        pre = before[j] if before is not None else None
        groups = post["locality_group_predictions"]
        rows.append({
            "weights": weights,
            "pre": None if pre is None else {"rewrite_acc": pre["rewrite_acc"], "rephrase_acc": pre["rephrase_acc"],
                                             "portability": pre["portability_acc"]},
            "post": {"rewrite_acc": post["rewrite_acc"], "rephrase_acc": post["rephrase_acc"],
                     "portability": post["portability_acc"],
                     "locality": None if pre is None else locality(pre, post),
                     "locality_groups": {group: None if pre is None else
                                         unchanged_share(pre["locality_group_predictions"][group], predictions)
                                         for group, predictions in groups.items()}},
        })
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean efficacy, generalisation and locality over requests, then ``portability/<group>`` and
    ``locality/<group>`` for each KnowEdit group (None where nothing was measured)."""
    pick = lambda key: [r["post"][key] for r in rows if r["post"][key] is not None]  # noqa: E731
    summary = {"efficacy": _mean(pick("rewrite_acc")), "generalisation": _mean(pick("rephrase_acc")),
               "locality": _mean(pick("locality"))}
    for kind, key in (("portability", "portability"), ("locality", "locality_groups")):
        names = sorted({group for r in rows for group in r["post"].get(key, {})})
        for group in names:
            values = [r["post"][key][group] for r in rows if r["post"].get(key, {}).get(group) is not None]
            summary[f"{kind}/{group}"] = _mean(values)
    return summary


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


# --- what a user sees: live greedy generation -----------------------------------------------------
@torch.no_grad()
def greedy_continuation(model, tok, prompt: str, answer: str) -> str:
    """The model's greedy continuation of ``prompt``, one token longer than `` answer``."""
    ids = torch.tensor([token_ids(tok, prompt)], device=model_device(model))
    for _ in range(len(token_ids(tok, " " + answer)) + 1):
        ids = torch.cat([ids, model(input_ids=ids).logits[0, -1].argmax().view(1, 1)], dim=1)
    return tok.decode(ids[0, len(token_ids(tok, prompt)):], skip_special_tokens=True)


def answers_with(continuation: str, answer: str) -> bool:
    """Whether ``continuation`` starts with the whole word(s) ``answer`` (leading spaces aside)."""
    text = continuation.lstrip()
    return text.startswith(answer) and not text[len(answer): len(answer) + 1].isalnum()


def greedy_says(model, tok, prompt: str, answer: str) -> bool:
    """Whether greedy generation after ``prompt`` starts with ``answer``."""
    return answers_with(greedy_continuation(model, tok, prompt, answer), answer)
