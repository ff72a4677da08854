"""The tokens before each row's looked-up token, run once into the model's attention cache.

Value optimisation adds its deltas at the looked-up token (the subject's last, usually). In a causal model
the tokens before it (the context template and the prompt up to there) never see the deltas, so every
layer's keys and values over them are the same at every step. ``split_at_lookup`` runs those tokens once,
keeps each layer's keys and values, and returns the batch of the remaining tokens, which attends to a fresh
copy of them at every forward: a step then runs a third to a half of the tokens it did.

Whether the split reproduces the model's own outputs depends on the model honouring an attention cache with
explicit positions and a padded mask, which every Hugging Face decoder does and a custom one may not:
``values`` checks it once per model against the unsplit batch and otherwise keeps the whole rows.
"""
from __future__ import annotations

import inspect
from dataclasses import replace

import torch

from .tokens import Batch, model_device, padded


def cache_argument(model) -> str:
    """The forward keyword of the attention cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PrefixCache:
    """Each layer's keys and values over the prefix tokens. ``inputs()`` gives a forward a fresh cache holding
    them (a forward appends its own tokens to the cache it is given), under the model's keyword for it."""

    def __init__(self, model, cache):
        self.config, self.argument = model.config, cache_argument(model)
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def inputs(self) -> dict:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        for index, (keys, values) in enumerate(self.layers):
            cache.update(keys, values, index)
        return {self.argument: cache, "use_cache": True}


def split_at_lookup(model, batch: Batch, pad: int) -> Batch | None:
    """``batch`` (right-padded, on the host) as the batch of each row's tokens from its looked-up one on, attending
    to the cached tokens before it (run on the model's device); its ``lookup`` is 0 in every row. None for a
    left-padded batch."""
    from transformers import DynamicCache

    if any(batch.offsets):
        return None
    lengths = batch.attention_mask.sum(1).tolist()  # from the host batch: no device round trip
    lookups = batch.lookup.tolist()
    rows = batch.input_ids.tolist()
    # A row with nothing before its looked-up token gets one pad token there, which the head's own pass attends
    # (a row attending to nothing gives NaNs in some attention kernels) and the rest of the row never sees.
    head_ids, head_mask, _ = padded([row[:at] or [pad] for row, at in zip(rows, lookups)], pad)
    tail_ids, tail_mask, _ = padded([row[at:n] for row, at, n in zip(rows, lookups, lengths)], pad)
    seen = head_mask.clone()
    seen[torch.tensor(lookups) == 0, 0] = 0
    device = model_device(model)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=head_ids.to(device), attention_mask=head_mask.to(device), use_cache=True,
              **{cache_argument(model): cache})
    return replace(batch, input_ids=tail_ids, attention_mask=torch.cat([seen, tail_mask], dim=1),
                   lookup=torch.zeros_like(batch.lookup),
                   position_ids=torch.tensor(lookups)[:, None] + torch.arange(tail_ids.shape[1]),
                   prefix=PrefixCache(model, cache))
