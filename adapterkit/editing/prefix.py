"""The tokens before each row's looked-up token, run once into the model's attention cache.

Value optimisation adds its deltas at the looked-up token (the subject's last, usually). In a causal model
the tokens before it (the context template and the prompt up to there) never see the deltas, so every
layer's keys and values over them are the same at every step. ``LookupSplit`` keeps each layer's keys and values
from one forward of the whole rows (the forward that records the reference outputs anyway), and gives the batch
of the remaining tokens, which attends to them at every step: a step then runs a third to a half of the tokens
it did.

Whether the split reproduces the model's own outputs depends on the model honouring an attention cache with
explicit positions and a padded mask, which every Hugging Face decoder does and a custom one may not:
``values`` checks it once per model against the unsplit batch and otherwise keeps the whole rows.
"""
from __future__ import annotations

import inspect
from dataclasses import replace

import torch

from .tokens import Batch, model_device, padded, rounded_up


def cache_argument(model) -> str:
    """The forward keyword of the attention cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PrefixCache:
    """Each layer's keys and values over the prefix tokens. ``inputs()`` gives a forward a fresh cache holding
    them (a forward appends its own tokens to the cache it is given), under the model's keyword for it."""

    def __init__(self, model, layers):
        self.config, self.argument = model.config, cache_argument(model)
        self.layers = list(layers)

    def tensors(self) -> list:
        return [t for pair in self.layers if pair is not None for t in pair]

    def inputs(self) -> dict:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=self.config)
        layers = getattr(cache, "layers", [])
        for index, pair in enumerate(self.layers):
            if pair is None:
                continue
            keys, values = pair
            layer = layers[index] if index < len(layers) else None
            if type(layer) is DynamicLayer:
                # A plain layer holds the prefix as it is: update() would first copy it into an empty tensor, one
                # more copy per layer and step. (values.py checks the split against whole rows once per model.)
                layer.keys, layer.values = keys, values
                layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
            else:
                cache.update(keys, values, index)
        return {self.argument: cache, "use_cache": True}


class CacheCollector:
    """Given to one forward of whole rows as its attention cache: keeps every layer's keys and values."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.cache, self.argument = DynamicCache(config=model.config), cache_argument(model)

    def inputs(self) -> dict:
        return {self.argument: self.cache, "use_cache": True}

    def tensors(self) -> list:
        return []


class LookupSplit:
    """Where each row of a right-padded host batch splits: its tokens before the looked-up one (cached) and from it
    on (stepped), padded to multiples of ``round_to``'s two numbers.

    ``whole`` is the batch to run once, whole, on the model's device: it keeps every layer's keys and values, and
    its outputs are the unsplit ones (a forward whose hooks record block outputs or logits needs nothing else).
    After that forward, ``stepped()`` is the batch of the remaining tokens, attending to the kept keys and values
    of the tokens before (its ``lookup`` is 0 in every row), and ``to_stepped`` cuts a [rows, width, ...]
    output of that forward to the stepped tokens' positions.
    """

    def __init__(self, model, batch: Batch, pad: int, round_to: tuple[int, int] = (1, 1)):
        lengths = batch.attention_mask.sum(1).tolist()  # from the host batch: no device round trip
        self.lookups = batch.lookup.tolist()
        rows = batch.input_ids.tolist()
        self.cached_width = rounded_up(max(max(self.lookups), 1), round_to[0])
        cached_mask = (torch.arange(self.cached_width)[None, :] < torch.tensor(self.lookups)[:, None]).long()
        stepped_ids, stepped_mask, _ = padded([row[at:n] for row, at, n in zip(rows, self.lookups, lengths)], pad,
                                              round_to=round_to[1])
        self.model, self.batch = model, batch
        self._stepped = replace(batch, input_ids=stepped_ids, attention_mask=torch.cat([cached_mask, stepped_mask], dim=1),
                                lookup=torch.zeros_like(batch.lookup),
                                position_ids=torch.tensor(self.lookups)[:, None] + torch.arange(stepped_ids.shape[1]))
        self.collector = CacheCollector(model)
        self.whole = replace(batch.widened(self.cached_width, pad) if batch.input_ids.shape[1] < self.cached_width else batch,
                             prefix=self.collector)

    def stepped(self) -> Batch:
        """The stepped tokens' batch (on the host; its prefix on the device), after ``whole`` has run."""
        width = self.whole.input_ids.shape[1]
        layers = []
        for layer in self.collector.cache.layers:
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if keys is None or keys.numel() == 0:  # a forward stopped below this layer never reaches it
                layers.append(None)
                continue
            if keys.shape[-2] != width:
                raise ValueError(f"a cache layer kept {keys.shape[-2]} of {width} positions (a sliding window?)")
            layers.append((keys[:, :, : self.cached_width], values[:, :, : self.cached_width]))
        return replace(self._stepped, prefix=PrefixCache(self.model, layers))

    def to_stepped(self, tensor: torch.Tensor) -> torch.Tensor:
        """A [rows, whole width, ...] tensor at the stepped tokens' positions; anything else as it is."""
        rows, width = self.whole.input_ids.shape
        if tensor.dim() < 2 or tuple(tensor.shape[:2]) != (rows, width):
            return tensor
        positions = torch.tensor(self.lookups)[:, None] + torch.arange(self._stepped.input_ids.shape[1])
        positions = positions.clamp(max=width - 1).to(tensor.device)  # pads past a row's end: masked out anyway
        return tensor[torch.arange(rows, device=tensor.device)[:, None], positions]


def split_at_lookup(model, batch: Batch, pad: int, round_to: tuple[int, int] = (1, 1)) -> Batch | None:
    """``batch`` (right-padded, on the host) as the batch of each row's tokens from its looked-up one on, attending
    to the kept keys and values of the tokens before it (after one forward of the whole rows on the model's device).
    None for a left-padded batch."""
    if any(batch.offsets):
        return None
    split = LookupSplit(model, batch, pad, round_to)
    with torch.no_grad():
        model(**split.whole.to(model_device(model)).inputs())
    return split.stepped()
