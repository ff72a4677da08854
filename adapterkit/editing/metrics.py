"""Edit metrics as EasyEdit defines them.

efficacy / generalisation: teacher-forced token accuracy of the target after the (rephrased) prompt.
locality: share of locality-prompt target tokens whose prediction is unchanged by the edit.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..requests import EditRequest
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
    """Efficacy, generalisation and the raw locality predictions of each request, on the weights now in ``model``."""
    efficacy = token_accuracy(model, tok, [r.prompt for r in requests], [r.target_new for r in requests])
    rephrase_rows = [(i, p) for i, r in enumerate(requests) for p in r.rephrase_prompts]
    rephrase = token_accuracy(model, tok, [p for _, p in rephrase_rows],
                              [requests[i].target_new for i, _ in rephrase_rows]) if rephrase_rows else []
    locality_rows = [(i, p, (r.locality_ground_truths[j] if r.locality_ground_truths else r.target_new))
                     for i, r in enumerate(requests) for j, p in enumerate(r.locality_prompts)]
    locality = target_predictions(model, tok, [p for _, p, _ in locality_rows],
                                  [t for _, _, t in locality_rows]) if locality_rows else []
    results = [{"rewrite_acc": acc, "rephrase_acc": [], "locality_predictions": []} for acc in efficacy]
    for (i, _), acc in zip(rephrase_rows, rephrase):
        results[i]["rephrase_acc"].append(acc)
    for (i, _, _), (pred, _) in zip(locality_rows, locality):
        results[i]["locality_predictions"].append(pred)
    for row in results:
        row["rephrase_acc"] = _mean(row["rephrase_acc"])
    return results


def locality(before: dict, after: dict) -> float | None:
    """Share of locality target tokens predicted the same before and after."""
    same = total = 0
    for pre, post in zip(before["locality_predictions"], after["locality_predictions"]):
        same += sum(a == b for a, b in zip(pre, post))
        total += len(pre)
    return same / total if total else None


def compare(before: list[dict], after: list[dict], weights: str) -> list[dict]:
    """Per request: pre/post efficacy and generalisation, and locality, naming the weights measured."""
    rows = []
    for pre, post in zip(before, after):
        rows.append({
            "weights": weights,
            "pre": {"rewrite_acc": pre["rewrite_acc"], "rephrase_acc": pre["rephrase_acc"]},
            "post": {"rewrite_acc": post["rewrite_acc"], "rephrase_acc": post["rephrase_acc"],
                     "locality": locality(pre, post)},
        })
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean efficacy, generalisation and locality over requests (None where nothing was measured)."""
    pick = lambda key: [r["post"][key] for r in rows if r["post"][key] is not None]  # noqa: E731
    return {"efficacy": _mean(pick("rewrite_acc")), "generalisation": _mean(pick("rephrase_acc")),
            "locality": _mean(pick("locality"))}


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None
