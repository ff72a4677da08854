"""Prompts and token positions: where a subject sits in a tokenised prompt, and padded batches of rows.

A fact is looked up at one token of the subject (``fact_token``): ``subject_last`` (the papers'
choice), ``subject_first``, ``subject_first_after_last``, or ``last`` (the prompt's last token). The
subject's tokens are found by tokenising the text before the subject, and before-plus-subject, and
comparing both with the whole prompt's tokens, so merges across the subject's edges (a trailing space,
a leading BOS) land on the right token. Padding, the pad id and the model's device are written once,
here, for every method and metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import AdapterkitError, RequestError

FACT_TOKENS = ("subject_last", "subject_first", "subject_first_after_last", "last")


# --- prompts and token positions ----------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """A prompt cut around its subject: ``before + subject + after``."""
    before: str
    subject: str
    after: str

    @property
    def text(self) -> str:
        return self.before + self.subject + self.after


def in_context(prompt: str, subject: str, context: str = "{}") -> Prompt:
    """``prompt`` placed where ``context`` has ``{}``, cut at the subject's first occurrence in ``prompt``."""
    at = prompt.find(subject)
    if at < 0:
        raise RequestError(f"subject {subject!r} does not occur in prompt {prompt!r}",
                           fix="write the subject exactly as it appears in the prompt")
    head, _, tail = context.partition("{}")
    return Prompt(head + prompt[:at], subject, prompt[at + len(subject):] + tail)


def plain_prompts(requests) -> list[Prompt]:
    return [in_context(r.prompt, r.subject) for r in requests]


def token_ids(tok, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def target_start(prompt_ids: Sequence[int], full_ids: Sequence[int]) -> int:
    """Where the target's tokens begin in ``tok(prompt + target)``, given ``tok(prompt)``."""
    prompt_ids, full_ids = list(prompt_ids), list(full_ids)
    start = len(prompt_ids) if full_ids[: len(prompt_ids)] == prompt_ids else common_prefix(prompt_ids, full_ids)
    return min(start, len(full_ids) - 1)


def subject_span(tok, prompt: Prompt, ids: Sequence[int] | None = None) -> tuple[int, int]:
    """Positions of the subject's first and last token in ``tok(prompt.text)``."""
    ids = token_ids(tok, prompt.text) if ids is None else ids
    first = common_prefix(token_ids(tok, prompt.before), ids)
    with_subject = token_ids(tok, prompt.before + prompt.subject)
    shared = common_prefix(with_subject, ids)
    # If the subject's last token merged with the text after it, that merged token holds the subject's end.
    last = shared if shared < len(with_subject) else shared - 1
    last = min(max(last, first), len(ids) - 1)
    return min(first, last), last


def lookup_index(tok, prompt: Prompt, fact_token: str, ids: Sequence[int] | None = None) -> int:
    """The token position ``fact_token`` names in the (unpadded) tokenised prompt."""
    ids = token_ids(tok, prompt.text) if ids is None else ids
    if fact_token == "last":
        return len(ids) - 1
    if fact_token not in FACT_TOKENS:
        raise AdapterkitError(f"fact_token {fact_token!r} is not known", fix=f"use one of {list(FACT_TOKENS)}")
    first, last = subject_span(tok, prompt, ids)
    if fact_token == "subject_first":
        return first
    if fact_token == "subject_last":
        return last
    return min(last + 1, len(ids) - 1)  # subject_first_after_last


# --- padded batches -----------------------------------------------------------------------------
def pad_id(tok) -> int:
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def model_device(model) -> torch.device:
    """Where a forward's inputs go: the embedding's device. On a model accelerate placed over several devices its
    hooks carry the activations on from there; what a module gives stays on that module's own device."""
    from ..checkpoints.placement import input_device

    return input_device(model)


def padded(rows: Sequence[Sequence[int]], pad: int, side: str = "right",
           round_to: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Token ids [rows, width], their attention mask, and how far each row was shifted right (left padding).
    ``width`` is the longest row's length rounded up to a multiple of ``round_to``."""
    width = rounded_up(max(len(r) for r in rows), round_to)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for i, row in enumerate(rows):
        start = width - len(row) if side == "left" else 0
        ids[i, start: start + len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, start: start + len(row)] = 1
        offsets.append(start)
    return ids, mask, offsets


def moved_together(tensors: Sequence[torch.Tensor | None], device) -> list[torch.Tensor | None]:
    """``tensors`` on ``device``. From the host to a GPU, the host tensors of each dtype travel in one copy from
    page-locked memory: one transfer instead of one per tensor, and the host does not wait for queued work."""
    device = torch.device(device)
    moved = [None if t is None else t.to(device) if device.type != "cuda" or t.device.type != "cpu" else t for t in tensors]
    if device.type != "cuda":
        return moved
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, tensor in enumerate(tensors):
        if tensor is not None and tensor.device.type == "cpu":
            by_dtype.setdefault(tensor.dtype, []).append(index)
    for indices in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices]).pin_memory().to(device, non_blocking=True)
        for index, part in zip(indices, flat.split([tensors[i].numel() for i in indices])):
            moved[index] = part.view(tensors[index].shape)
    return moved


def rounded_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """The rows of a padded batch without their padding."""
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


@dataclass
class Batch:
    """Padded token ids, their mask, and per row the position looked up (already shifted for padding).

    A batch that continues cached tokens (``prefix.split_at_lookup``) also has its positions and a ``prefix``
    whose ``inputs()`` give each forward the attention cache it starts from; its mask covers the cached tokens
    too."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lookup: torch.Tensor
    offsets: list[int]          # how far each row was shifted right (left padding), 0 for right padding
    position_ids: torch.Tensor | None = None
    prefix: object | None = None

    def to(self, device) -> "Batch":
        ids, mask, lookup, positions = moved_together([self.input_ids, self.attention_mask, self.lookup, self.position_ids], device)
        return Batch(ids, mask, lookup, self.offsets, positions, self.prefix)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a forward of this batch reads (its prefix's cached keys and values too)."""
        own = [self.input_ids, self.attention_mask, self.lookup] + ([] if self.position_ids is None else [self.position_ids])
        return own + (self.prefix.tensors() if self.prefix is not None else [])

    def widened(self, round_to: int, pad: int) -> "Batch":
        """This (right-padded) batch with pad columns up to a width that is a multiple of ``round_to``."""
        extra = rounded_up(self.input_ids.shape[1], round_to) - self.input_ids.shape[1]
        if extra == 0:
            return self
        fill = lambda t, value: torch.cat([t, t.new_full((t.shape[0], extra), value)], dim=1)  # noqa: E731
        positions = None if self.position_ids is None else torch.cat(
            [self.position_ids, self.position_ids[:, -1:] + torch.arange(1, extra + 1)], dim=1)
        return Batch(fill(self.input_ids, pad), fill(self.attention_mask, 0), self.lookup, self.offsets, positions, self.prefix)

    def inputs(self) -> dict:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.prefix is not None:
            inputs.update(position_ids=self.position_ids, **self.prefix.inputs())
        return inputs


def pad_rows(rows: Sequence[Sequence[int]], lookups: Sequence[int], pad: int, side: str = "right") -> Batch:
    ids, mask, offsets = padded(rows, pad, side)
    lookup = torch.tensor([o + p for o, p in zip(offsets, lookups)], dtype=torch.long)
    return Batch(ids, mask, lookup, offsets)


def encode(tok, prompts: Sequence[Prompt], fact_token: str, side: str = "right") -> Batch:
    """Tokenise prompts into one padded batch, with the looked-up position of each row."""
    rows = [token_ids(tok, p.text) for p in prompts]
    lookups = [lookup_index(tok, p, fact_token, ids) for p, ids in zip(prompts, rows)]
    return pad_rows(rows, lookups, pad_id(tok), side)
