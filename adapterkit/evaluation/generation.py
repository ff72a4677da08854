"""Greedy decoding in batches, left-padded, without truncating to a target's length: each row stops at an
end-of-sequence token, at a newline (where asked), or after ``max_new_tokens``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import inspect

import torch

from ..editing.tokens import model_device, pad_id, padded, rounded_up, token_ids

STOPPED_BY = ("eos", "newline", "limit")


@dataclass(frozen=True)
class Generation:
    text: str          # the continuation, without the prompt, the stop token or anything after a newline
    stopped_by: str    # one of STOPPED_BY
    new_tokens: int
    full_text: str     # the prompt's tokens and the continuation's decoded together (as ROME scores fluency)


def stop_token_ids(model, tok) -> set[int]:
    """The tokenizer's end-of-sequence token and those the model's generation config names (a chat model's
    end-of-turn token is often one of these)."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {int(i) for i in ids}


@torch.no_grad()
def greedy_generate(model, tok, prompts: Sequence[str], *, max_new_tokens: int = 32, stop_at_newline: bool = True,
                    batch_size: int = 32, max_positions: int | None = None, compiled: bool = False) -> list[Generation]:
    """The greedy continuation of each prompt (see the module docstring for when a row stops). ``max_positions``:
    the model's position limit, which no row's prompt and continuation together pass (a row there stops by limit).
    ``compiled``: decode through transformers' static cache, which on a CUDA device compiles the model's forward
    (CUDA graphs), where the model allows it (``decodes_through_static_cache``): the same greedy answers up to
    floating-point rounding (a near-tie may part them), without Python's cost at every step, after a compile of
    about a minute at 7B (each new batch shape records again)."""
    static = compiled and decodes_through_static_cache(model)
    generate_batch = _generate_batch_static if static else _generate_batch
    out = []
    for lo in range(0, len(prompts), batch_size):
        out += generate_batch(model, tok, prompts[lo: lo + batch_size], max_new_tokens, stop_at_newline, max_positions)
    return out


def cache_argument(model) -> str | None:
    """The keyword the model's forward takes its attention cache by (transformers renamed ``past_key_values`` to
    ``cache``); None for a model that takes neither (a method's wrapper), which is fed the whole sequence each step."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _returned_cache(output):
    for name in ("cache", "past_key_values"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


def _generate_batch(model, tok, prompts, max_new_tokens: int, stop_at_newline: bool,
                    max_positions: int | None) -> list[Generation]:
    device = model_device(model)
    cache_name = cache_argument(model)
    stops = stop_token_ids(model, tok)
    prompt_ids = [token_ids(tok, p) for p in prompts]
    ids, mask, _ = padded(prompt_ids, pad_id(tok), side="left")
    ids, mask = ids.to(device), mask.to(device)
    if max_positions is not None:  # the batch is as wide as its longest prompt: every row stops where that one must
        max_new_tokens = max(0, min(max_new_tokens, max_positions - ids.shape[1]))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    new: list[list[int]] = [[] for _ in prompts]
    stopped: list[str | None] = [None] * len(prompts)
    past, step_ids, step_positions = None, ids, positions
    for _ in range(max_new_tokens):
        caching = {cache_name: past, "use_cache": True} if cache_name else {}
        output = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions, **caching)
        past = _returned_cache(output) if cache_name else None
        chosen = output.logits[:, -1].argmax(-1)
        for row, token in enumerate(chosen.tolist()):
            if stopped[row] is None:
                stopped[row] = _taken(tok, token, new[row], stops, stop_at_newline)
        if all(s is not None for s in stopped):
            break
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
        next_positions = step_positions[:, -1:] + 1
        if past is None:  # a model that keeps no cache: feed the whole sequence again
            ids = torch.cat([ids, chosen.view(-1, 1)], dim=1)
            positions = torch.cat([positions, next_positions], dim=1)
            step_ids, step_positions = ids, positions
        else:
            step_ids, step_positions = chosen.view(-1, 1), next_positions
    return [_generation(tok, prompt, tokens, stop, stop_at_newline) for prompt, tokens, stop in zip(prompt_ids, new, stopped)]


def _taken(tok, token: int, new: list[int], stops: set[int], stop_at_newline: bool) -> str | None:
    """Take the next ``token`` of a row whose continuation so far is ``new``: why the row stops there, if it does
    (an end-of-sequence token is not kept; a token that brings a newline is)."""
    if token in stops:
        return "eos"
    new.append(token)
    if stop_at_newline and "\n" in tok.decode(new, skip_special_tokens=True):
        return "newline"
    return None


def _generation(tok, prompt: list[int], tokens: list[int], stopped: str | None, stop_at_newline: bool) -> Generation:
    text = tok.decode(tokens, skip_special_tokens=True)
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return Generation(text, stopped or "limit", len(tokens), tok.decode(prompt + tokens, skip_special_tokens=True))


# --- through a static cache, compiled -------------------------------------------------------------
STATIC_WIDTH_STEP = 32  # prompt widths rounded up to this, so that few cache shapes are compiled


def decodes_through_static_cache(model) -> bool:
    """A transformers model whose class supports a static cache and a compiled forward, in one piece (transformers
    compiles no offloaded model); a method's wrapper (SERAC) or an offloaded model decodes step by step instead."""
    from transformers import GenerationMixin

    if not isinstance(model, GenerationMixin) or not getattr(model, "_can_compile_fullgraph", False):
        return False
    return len({p.device for p in model.parameters()}) == 1 and not getattr(model, "hf_device_map", None)


class _NewlineStop:
    """transformers' stopping criterion for a row whose continuation holds a newline, as ``_generate_batch`` stops."""

    def __init__(self, tok, width: int):
        self.tok, self.width = tok, width

    def __call__(self, input_ids, scores, **kwargs):
        rows = input_ids[:, self.width:].tolist()
        return torch.tensor(["\n" in self.tok.decode(row, skip_special_tokens=True) for row in rows],
                            dtype=torch.bool, device=input_ids.device)


def _generate_batch_static(model, tok, prompts, max_new_tokens: int, stop_at_newline: bool,
                           max_positions: int | None) -> list[Generation]:
    from transformers import GenerationConfig, StoppingCriteriaList

    device = model_device(model)
    stops = stop_token_ids(model, tok)
    prompt_ids = [token_ids(tok, p) for p in prompts]
    longest = max(len(ids) for ids in prompt_ids)
    round_to = STATIC_WIDTH_STEP
    if max_positions is not None:  # as many new tokens as the step-by-step decoding gives, unrounded if need be
        max_new_tokens = max(0, min(max_new_tokens, max_positions - longest))
        if rounded_up(longest, round_to) + max_new_tokens > max_positions:
            round_to = 1
    if max_new_tokens == 0:
        return [_generation(tok, ids, [], None, stop_at_newline) for ids in prompt_ids]
    fill = pad_id(tok)
    ids, mask, _ = padded(prompt_ids, fill, side="left", round_to=round_to)
    ids, mask, width = ids.to(device), mask.to(device), ids.shape[1]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=sorted(stops) or None, pad_token_id=fill, cache_implementation="static")
    criteria = StoppingCriteriaList([_NewlineStop(tok, width)]) if stop_at_newline else None
    sequences = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                               stopping_criteria=criteria).tolist()
    generations = []
    for prompt, sequence in zip(prompt_ids, sequences):
        new, stopped = [], None
        for token in sequence[width:]:  # after a row stops, transformers pads it
            stopped = _taken(tok, token, new, stops, stop_at_newline)
            if stopped:
                break
        generations.append(_generation(tok, prompt, new, stopped, stop_at_newline))
    return generations
