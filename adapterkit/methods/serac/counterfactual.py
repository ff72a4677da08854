"""The counterfactual model: a small causal LM that answers a query after reading the matched edit,
``edit prompt + new target + separator + query``."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ...editing.metrics import encode_pairs
from ...editing.tokens import pad_id, padded, unpadded
from ...errors import AdapterkitError
from ...requests import EditRequest
from ...settings.methods import SERACSettings


def counterfactual_model(model, spec, settings: SERACSettings):
    """A small causal LM with the base model's tokenizer: ``small_name``, or a copy of the base (its first
    ``cf_num_layers`` layers); None with ``freeze_cntr`` (the frozen base model reads the edit itself)."""
    if settings.freeze_cntr:
        return None
    if settings.small_name:
        from ...checkpoints.loading import load_model

        small, _ = load_model(settings.small_name, dtype=torch.float32, tokenizer=False)
        vocab = spec.vocab_size(model.config)
        small_vocab = small.get_output_embeddings().weight.shape[0]
        if small_vocab != vocab:
            raise AdapterkitError(f"small_name {settings.small_name!r} has a vocabulary of {small_vocab}, the base model {vocab}",
                                  fix="the counterfactual model must share the base model's tokenizer; pick one that does")
        return small
    cf = copy.deepcopy(model)
    if settings.cf_num_layers:
        truncate_layers(cf, spec, settings.cf_num_layers)
    return cf


def truncate_layers(model, spec, n_layers: int) -> None:
    """Keep the first ``n_layers`` transformer layers (embedding, final norm and head stay)."""
    total = spec.num_layers(model.config)
    if not 0 < n_layers <= total:
        raise AdapterkitError(f"cf_num_layers={n_layers} is outside 1..{total} (the base model's depth)",
                              fix=f"set cf_num_layers between 1 and {total}, or null for a full copy")
    parent_name, _, attr = spec.layers_path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:n_layers]))
    rule = spec.declaration["config"]["num_layers"]
    keys = [rule] if isinstance(rule, str) else (rule if isinstance(rule, list) else rule["keys"])
    for key in keys:
        if hasattr(model.config, key):
            setattr(model.config, key, n_layers)
    for module in model.modules():  # modules that cached the depth at construction
        if module is not model and hasattr(module, "num_layers") and getattr(module, "num_layers") == total:
            module.num_layers = n_layers


# --- reading an edit -------------------------------------------------------------------------------------
def separator_id(tok) -> int:
    for candidate in (tok.sep_token_id, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id):
        if candidate is not None:
            return int(candidate)
    raise AdapterkitError("the tokenizer has no sep, eos, bos or pad token to separate the edit from the query",
                          fix="give the tokenizer an eos_token")


def edit_ids(tok, request: EditRequest) -> list[int]:
    ids, mask, _ = encode_pairs(tok, [request.prompt], [request.target_new])
    return ids[0][mask[0].bool()].tolist()


def conditioned_logits(cf, tok, contexts: Sequence[Sequence[int]], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The counterfactual model's logits for each row of ``ids`` read after ``context + separator``,
    at the row's own positions (positions the mask leaves out keep zeros)."""
    sep = separator_id(tok)
    rows = unpadded(ids, mask)
    joined = [list(ctx) + [sep] + row for ctx, row in zip(contexts, rows)]
    cf_ids, cf_mask, _ = padded(joined, pad_id(tok))
    cf_ids, cf_mask = cf_ids.to(ids.device), cf_mask.to(ids.device)
    logits = cf(input_ids=cf_ids, attention_mask=cf_mask).logits
    out = logits.new_zeros((*ids.shape, logits.shape[-1]))
    for i, (ctx, row) in enumerate(zip(contexts, rows)):
        positions = mask[i].bool().nonzero().squeeze(-1)
        out[i, positions] = logits[i, len(ctx) + 1: len(ctx) + 1 + len(row)]
    return out
