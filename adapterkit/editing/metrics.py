"""Edit metrics as EasyEdit defines them.

efficacy / generalisation: teacher-forced token accuracy of the target after the (rephrased) prompt.
portability/<group>: the same accuracy for each KnowEdit portability group's answers after its prompts.
locality (and locality/<group> for KnowEdit's groups): share of locality-prompt target tokens whose prediction
is unchanged by the edit.
"""
from __future__ import annotations

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


@torch.no_grad()
def target_predictions(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 64):
    """Per pair: (predicted ids, target ids) at the target positions, teacher-forced."""
    out = []
    for lo in range(0, len(prompts), batch_size):
        ids, mask, spans = encode_pairs(tok, prompts[lo: lo + batch_size], targets[lo: lo + batch_size])
        logits = model(input_ids=ids.to(model_device(model)), attention_mask=mask.to(model_device(model))).logits
        predicted = logits.argmax(-1).cpu()
        for row, (start, stop) in enumerate(spans):
            out.append((predicted[row, start - 1: stop - 1].tolist(), ids[row, start:stop].tolist()))
    return out


def token_accuracy(model, tok, prompts: Sequence[str], targets: Sequence[str]) -> list[float]:
    pairs = target_predictions(model, tok, prompts, targets)
    return [sum(p == t for p, t in zip(pred, gold)) / max(len(gold), 1) for pred, gold in pairs]


def evaluate(model, tok, requests: Sequence[EditRequest]) -> list[dict]:
    """Efficacy, generalisation, portability per group and the raw locality predictions (flat and per group) of
    each request, on the weights now in ``model``."""
    efficacy = token_accuracy(model, tok, [r.prompt for r in requests], [r.target_new for r in requests])
    rephrase_rows = [(i, p) for i, r in enumerate(requests) for p in r.rephrase_prompts]
    rephrase = token_accuracy(model, tok, [p for _, p in rephrase_rows],
                              [requests[i].target_new for i, _ in rephrase_rows]) if rephrase_rows else []
    locality_rows = [(i, p, (r.locality_ground_truths[j] if r.locality_ground_truths else r.target_new))
                     for i, r in enumerate(requests) for j, p in enumerate(r.locality_prompts)]
    locality = target_predictions(model, tok, [p for _, p, _ in locality_rows],
                                  [t for _, _, t in locality_rows]) if locality_rows else []
    results = [{"rewrite_acc": acc, "rephrase_acc": [], "locality_predictions": [], "portability_acc": {},
                "locality_group_predictions": {}} for acc in efficacy]
    for (i, _), acc in zip(rephrase_rows, rephrase):
        results[i]["rephrase_acc"].append(acc)
    for (i, _, _), (pred, _) in zip(locality_rows, locality):
        results[i]["locality_predictions"].append(pred)
    portability_rows = _probe_rows(requests, "portability")
    for (i, group, _), acc in zip(portability_rows, _measure(token_accuracy, model, tok, portability_rows)):
        results[i]["portability_acc"].setdefault(group, []).append(acc)
    group_rows = _probe_rows(requests, "locality_groups")
    for (i, group, _), (pred, _) in zip(group_rows, _measure(target_predictions, model, tok, group_rows)):
        results[i]["locality_group_predictions"].setdefault(group, []).append(pred)
    for row in results:
        row["rephrase_acc"] = _mean(row["rephrase_acc"])
        row["portability_acc"] = {group: _mean(accs) for group, accs in row["portability_acc"].items()}
    return results


def _probe_rows(requests: Sequence[EditRequest], groups: str) -> list[tuple[int, str, Probe]]:
    """(request index, group name, probe) for every probe of the requests' ``groups`` attribute."""
    return [(i, group.name, probe) for i, r in enumerate(requests) for group in getattr(r, groups)
            for probe in group.probes]


def _measure(measure, model, tok, rows) -> list:
    return measure(model, tok, [p.prompt for _, _, p in rows], [p.answer for _, _, p in rows]) if rows else []


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
