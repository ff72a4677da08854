"""Where a fact is looked up, and what a module sees (its input: the key) and says (its output) there.

ROME and MEMIT read the rewrite module's input at one token of the subject (``fact_token``):
``subject_last`` (the papers' choice), ``subject_first``, ``subject_first_after_last``, or ``last``
(the prompt's last token). The subject's tokens are found by tokenising the text before the
subject, and before-plus-subject, and comparing both with the whole prompt's tokens, so merges
across the subject's edges (a trailing space, a leading BOS) land on the right token.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

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


def token_ids(tok, text: str) -> list[int]:
    return list(tok(text)["input_ids"])


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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


@dataclass
class Batch:
    """Padded token ids, their mask, and per row the position looked up (already shifted for padding)."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lookup: torch.Tensor
    offsets: list[int]          # how far each row was shifted right (left padding), 0 for right padding

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.lookup.to(device), self.offsets)

    def inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def pad_rows(rows: Sequence[Sequence[int]], lookups: Sequence[int], pad: int, side: str = "right") -> Batch:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for i, row in enumerate(rows):
        start = width - len(row) if side == "left" else 0
        ids[i, start: start + len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, start: start + len(row)] = 1
        offsets.append(start)
    lookup = torch.tensor([o + p for o, p in zip(offsets, lookups)], dtype=torch.long)
    return Batch(ids, mask, lookup, offsets)


def encode(tok, prompts: Sequence[Prompt], fact_token: str, side: str = "right") -> Batch:
    """Tokenise prompts into one padded batch, with the looked-up position of each row."""
    rows = [token_ids(tok, p.text) for p in prompts]
    lookups = [lookup_index(tok, p, fact_token, ids) for p, ids in zip(prompts, rows)]
    return pad_rows(rows, lookups, pad_id(tok), side)


# --- hooks ----------------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised from a hook once everything wanted from a forward pass has been recorded."""


def first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    raise AdapterkitError(f"a hooked module returned {type(value).__name__}, not a tensor",
                          fix="point the hparams template at a module whose output is a hidden-state tensor")


def _replace_first_tensor(value, new):
    if isinstance(value, torch.Tensor):
        return new
    items = list(value)
    index = next(i for i, item in enumerate(items) if isinstance(item, torch.Tensor))
    items[index] = new
    return tuple(items) if isinstance(value, tuple) else items


@dataclass
class Record:
    inputs: dict
    outputs: dict


def _batch_shape_hook(shape: list):
    """A model pre-hook keeping the (batch, tokens) shape of the forward's input ids in ``shape``."""
    def fn(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape[:] = list(ids.shape[:2]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else []
    return fn


def batch_major(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """[batch, tokens, d]: some blocks run their MLP on the tokens flattened to [batch * tokens, d]."""
    if tensor.dim() == 2 and len(shape) == 2 and tensor.shape[0] == shape[0] * shape[1]:
        return tensor.view(shape[0], shape[1], tensor.shape[-1])
    return tensor


@contextlib.contextmanager
def trace(model, inputs: Iterable[str] = (), outputs: Iterable[str] = (), stop: bool = False):
    """Record the input (first tensor argument) and output (first tensor) of named modules in one forward.

    With ``stop=True`` the forward pass ends as soon as every named module has run; ``run`` swallows that.
    """
    inputs, outputs = list(inputs), list(outputs)
    record = Record({}, {})
    wanted = set(inputs) | set(outputs)
    fired: set[str] = set()  # modules seen in the current forward pass
    shape: list = []
    handles = [model.register_forward_pre_hook(lambda *args: fired.clear()),
               model.register_forward_pre_hook(_batch_shape_hook(shape), with_kwargs=True)]

    def hook(name):
        def fn(module, args, kwargs, output):
            if name in inputs:
                record.inputs[name] = batch_major(first_tensor(list(args) + list(kwargs.values())), shape)
            if name in outputs:
                record.outputs[name] = batch_major(first_tensor(output), shape)
            fired.add(name)
            if stop and fired >= wanted:
                raise _StopForward
        return fn

    try:
        for name in wanted:
            handles.append(model.get_submodule(name).register_forward_hook(hook(name), with_kwargs=True))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def run(model, batch: Batch) -> torch.Tensor | None:
    """Forward ``batch``; returns logits, or None when a ``trace(stop=True)`` ended the pass early."""
    try:
        return model(**batch.inputs()).logits
    except _StopForward:
        return None


@contextlib.contextmanager
def edit_output(model, name: str, edit: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the output (its first tensor) of module ``name`` by ``edit(output)`` during forwards.

    ``edit`` sees [batch, tokens, d] also where the module runs on flattened tokens."""
    shape: list = []

    def fn(module, args, output):
        out = first_tensor(output)
        return _replace_first_tensor(output, edit(batch_major(out, shape)).reshape(out.shape))

    handles = [model.register_forward_pre_hook(_batch_shape_hook(shape), with_kwargs=True),
               model.get_submodule(name).register_forward_hook(fn)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def frozen(model):
    """Evaluation mode and no weight gradients while editing; the model's own settings come back after."""
    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


# --- keys and values at the looked-up token ----------------------------------------------------
@torch.no_grad()
def module_io(model, tok, prompts: Sequence[Prompt], fact_token: str, module: str, *,
              want: str = "both", batch_size: int = 64) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input and/or output of ``module`` at each prompt's looked-up token: ([N, d_in], [N, d_out]).

    The forward stops right after ``module``; rows go through in batches of ``batch_size``.
    """
    ins, outs = [], []
    for lo in range(0, len(prompts), batch_size):
        batch = encode(tok, prompts[lo: lo + batch_size], fact_token).to(model_device(model))
        rows = torch.arange(len(batch.lookup))
        with trace(model, inputs=[module] if want != "output" else [],
                   outputs=[module] if want != "input" else [], stop=True) as record:
            run(model, batch)
        if want != "output":
            ins.append(at_positions(record.inputs[module], rows, batch.lookup))
        if want != "input":
            outs.append(at_positions(record.outputs[module], rows, batch.lookup))
    return (torch.cat(ins) if ins else None), (torch.cat(outs) if outs else None)


def at_positions(tensor: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``tensor[rows, positions]`` on ``tensor``'s device."""
    return tensor[rows.to(tensor.device), positions.to(tensor.device)]


def context_mean(values: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """[R * C, d] rows (request-major, C contexts in groups) -> [R, d]: mean within each group, then over groups."""
    per_request = sum(group_sizes)
    values = values.reshape(-1, per_request, values.shape[-1])
    means, start = [], 0
    for size in group_sizes:
        means.append(values[:, start: start + size].mean(1))
        start += size
    return torch.stack(means, 1).mean(1)


def context_keys(model, tok, requests, templates: Sequence[Sequence[str]], fact_token: str, module: str,
                 batch_size: int = 64) -> torch.Tensor:
    """Each request's key at ``module``: its input at the subject, averaged over the context templates (ROME's u, MEMIT's k).

    Requests go through in chunks so that thousands of them never hold every context's key at once.
    """
    per_request = sum(len(g) for g in templates)
    step = max(1, batch_size * 4 // per_request)
    means = []
    for lo in range(0, len(requests), step):
        prompts = [in_context(r.prompt, r.subject, c) for r in requests[lo: lo + step] for group in templates for c in group]
        keys, _ = module_io(model, tok, prompts, fact_token, module, want="input", batch_size=batch_size)
        means.append(context_mean(keys.float(), [len(g) for g in templates]))
    return torch.cat(means)


def plain_prompts(requests) -> list[Prompt]:
    return [in_context(r.prompt, r.subject) for r in requests]


def check_layers(layers: Sequence[int], num_layers: int, where: str = "hparams") -> list[int]:
    bad = [layer for layer in layers if not 0 <= int(layer) < num_layers]
    if bad or not layers:
        raise AdapterkitError(f"{where}: layers {list(layers)} do not fit a model of {num_layers} layers",
                              fix=f"choose layers in 0..{num_layers - 1} (`adapterkit detect` picks them for this depth)")
    return sorted(int(layer) for layer in layers)
