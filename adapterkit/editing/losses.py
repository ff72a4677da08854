"""Losses and validation metrics of learned editors (MEND, SERAC): teacher-forced target labels, token NLL,
token accuracy, KL locality, and one batch's edit quality."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..requests import EditRequest
from . import metrics as edit_metrics


def target_labels(tok, prompts: Sequence[str], targets: Sequence[str], device):
    """ids, mask and labels (-100 outside the target tokens) for teacher-forced prompt+target rows."""
    ids, mask, spans = edit_metrics.encode_pairs(tok, prompts, targets)
    labels = torch.full_like(ids, -100)
    for row, (start, stop) in enumerate(spans):
        labels[row, start:stop] = ids[row, start:stop]
    return ids.to(device), mask.to(device), labels.to(device)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (zero where unlabelled) and the label mask, predicting position t+1 from t."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
    return nll.view(labels.shape) * mask, mask


def mean_nll(logits, labels) -> torch.Tensor:
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp(min=1)


def label_accuracy(logits, labels) -> float:
    """Share of labelled tokens predicted correctly (EasyEdit's token accuracy, averaged over rows)."""
    predicted, gold = logits[:, :-1].argmax(-1), labels[:, 1:]
    mask = gold != -100
    per_row = ((predicted == gold) & mask).sum(-1).float() / mask.sum(-1).clamp(min=1)
    return per_row.mean().item()


def kl_locality(base_logits, edited_logits, mask) -> torch.Tensor:
    """KL(base || edited) per token, averaged over the attended tokens (MEND's locality loss)."""
    base = base_logits.float().log_softmax(-1)
    edited = edited_logits.float().log_softmax(-1)
    per_token = (base.exp() * (base - edited)).sum(-1)
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def edit_quality(before: LogitsFn, after: LogitsFn, tok, requests: Sequence[EditRequest], device) -> dict:
    """Validation metrics of one batch of edits: edit and rephrase accuracy, locality, perplexity before/after."""
    out = {}
    ids, mask, labels = target_labels(tok, [r.prompt for r in requests], [r.target_new for r in requests], device)
    out["edit/acc"] = label_accuracy(after(ids, mask), labels)
    rephrase = [(p, r.target_new) for r in requests for p in r.rephrase_prompts]
    if rephrase:
        ids, mask, labels = target_labels(tok, *zip(*rephrase), device)
        out["rephrase/acc"] = label_accuracy(after(ids, mask), labels)
    local = [(p, (r.locality_ground_truths[i] if r.locality_ground_truths else r.target_new))
             for r in requests for i, p in enumerate(r.locality_prompts)]
    if local:
        ids, mask, labels = target_labels(tok, *zip(*local), device)
        pre, post = before(ids, mask), after(ids, mask)
        gold = labels[:, 1:] != -100
        same = (pre[:, :-1].argmax(-1) == post[:, :-1].argmax(-1)) & gold
        out["loc/acc"] = (same.sum() / gold.sum().clamp(min=1)).item()
        out["ppl/pre"] = math.exp(min(mean_nll(pre, labels).item(), 50.0))
        out["ppl/post"] = math.exp(min(mean_nll(post, labels).item(), 50.0))
    return out
