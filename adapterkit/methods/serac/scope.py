"""The scope classifier: does a query fall in the scope of a stored edit?"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...editing.metrics import encode_pairs
from ...editing.tokens import in_context, subject_span
from ...requests import EditRequest


def subject_positions(tok, request: EditRequest) -> tuple[int, int]:
    """[first, last + 1) of the subject's tokens in the tokenised prompt."""
    first, last = subject_span(tok, in_context(request.prompt, request.subject))
    return first, last + 1


class ScopeClassifier(nn.Module):
    """p(query in scope of edit) = sigmoid(scale * (similarity(query, edit) - threshold)).

    Similarities are cosines of projected (P, identity at the start), standardised frozen features:
      subject  the edit is keyed by its subject's token states; each of them finds its closest token in
               the query and the similarity is the worst of these matches: a query is about the edit when it
               names the whole subject (an edit's scope is what is said about its subject)
      mean     mean-pooled sentence vectors, the edit keyed by its prompt and by its statement
               (prompt + new target), the closer of the two counting
      idf      as mean, tokens weighted by how rarely the training templates (prompts without their
               subjects) use them
    The scale is learned in log space and the threshold in cosine units, so Adam moves both usefully from
    the start.
    """

    def __init__(self, feature_dim: int, dim: int | None, vocab_size: int, pooling: str):
        super().__init__()
        dim = dim or feature_dim
        self.pooling = pooling
        self.project = nn.Linear(feature_dim, dim, bias=False)
        with torch.no_grad():
            nn.init.eye_(self.project.weight) if dim == feature_dim else nn.init.orthogonal_(self.project.weight)
        self.register_buffer("token_weight", torch.ones(vocab_size))
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.log_scale = nn.Parameter(torch.tensor(20.0).log())
        self.threshold = nn.Parameter(torch.tensor(0.9 if pooling == "subject" else 0.5))

    # --- fitted before training -----------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, features, texts, templates) -> None:
        """Token weights from the templates (idf), then the mean and spread of the features of the texts."""
        if self.pooling == "idf":
            ids, mask = templates
            present = torch.zeros(len(ids), len(self.token_weight), device=ids.device)
            present.scatter_reduce_(1, ids, mask.float(), reduce="amax")
            self.token_weight.copy_(torch.log((1 + len(ids)) / (1 + present.sum(0))) + 1e-3)
        ids, mask = texts
        if self.pooling == "subject":
            states = features.tokens(ids, mask)[mask.bool()]
        else:
            states = features.pooled(ids, mask, self.pool_weights(ids, mask))
        self.feature_mean.copy_(states.mean(0))
        self.feature_std.copy_(states.std(0).clamp(min=1e-6))

    def pool_weights(self, ids, mask):
        if self.pooling != "idf":
            return mask
        return self.token_weight[ids.clamp(max=len(self.token_weight) - 1)] * mask.to(self.token_weight.dtype)

    def embed(self, states: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.project((states - self.feature_mean) / self.feature_std), dim=-1)

    # --- keys and scores ------------------------------------------------------------------------------
    def keys(self, features, tok, requests: Sequence[EditRequest], device):
        """What the memory stores per edit, in the form ``similarities`` reads."""
        if self.pooling == "subject":
            ids, mask = prompt_ids(tok, [r.prompt for r in requests], device)
            states = self.embed(features.tokens(ids, mask))
            spans = [subject_positions(tok, r) for r in requests]
            width = max(stop - start for start, stop in spans)
            keys = states.new_zeros((len(requests), width, states.shape[-1]))
            key_mask = torch.zeros((len(requests), width), dtype=torch.bool, device=states.device)
            for i, (start, stop) in enumerate(spans):
                keys[i, : stop - start], key_mask[i, : stop - start] = states[i, start:stop], True
            return keys, key_mask
        ids, mask = prompt_ids(tok, [r.prompt for r in requests], device)
        asked = self.embed(features.pooled(ids, mask, self.pool_weights(ids, mask)))
        ids, mask, _ = encode_pairs(tok, [r.prompt for r in requests], [r.target_new for r in requests])
        ids, mask = ids.to(device), mask.to(device)
        stated = self.embed(features.pooled(ids, mask, self.pool_weights(ids, mask)))
        return torch.stack((asked, stated)), None

    def similarities(self, features, ids, mask, keys) -> torch.Tensor:
        """[n_queries, n_edits] cosine similarities."""
        keys, key_mask = keys
        if self.pooling == "subject":
            queries = self.embed(features.tokens(ids, mask))                       # [q, t, d]
            cos = torch.einsum("qtd,esd->qest", queries, keys)
            cos = cos.masked_fill(~mask.bool()[:, None, None, :], -1.0)
            best = cos.max(-1).values                                               # [q, e, s]
            return best.masked_fill(~key_mask, 1.0).min(-1).values                  # every subject token found
        queries = self.embed(features.pooled(ids, mask, self.pool_weights(ids, mask)))
        return torch.maximum(queries @ keys[0].T, queries @ keys[1].T)

    def logits(self, similarities: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * (similarities - self.threshold)


def prompt_ids(tok, prompts: Sequence[str], device):
    ids, mask, _ = encode_pairs(tok, prompts, [""] * len(prompts))
    return ids.to(device), mask.to(device)
