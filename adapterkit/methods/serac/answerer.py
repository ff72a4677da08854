"""What SERAC's ``apply`` returns: the base model behind the scope classifier and the counterfactual model."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import torch
from torch import nn

from ...editing.tokens import model_device
from ...errors import AdapterkitError
from ...requests import EditRequest
from .counterfactual import conditioned_logits, edit_ids
from .editor import SeracEditor


class SeracAnswerer(nn.Module):
    """The base model behind a scope classifier and a counterfactual model that reads the matched edit.

    Call it like a causal LM: ``answerer(input_ids=..., attention_mask=...).logits``; each row is answered
    by the base model, or, when it falls in an edit's scope, by the counterfactual model.
    """

    def __init__(self, base, editor: SeracEditor, features, tok, requests: Sequence[EditRequest], threshold: float = 0.5):
        super().__init__()
        self.base, self.editor = base, editor
        self.features, self.tok, self.threshold = features, tok, threshold
        self.requests = list(requests)
        self.contexts = [edit_ids(tok, r) for r in self.requests]
        device = model_device(base)
        with torch.no_grad():
            self.keys = editor.classifier.keys(features, tok, self.requests, device)

    @property
    def config(self):
        return self.base.config

    @property
    def counterfactual(self):
        return self.editor.counterfactual if self.editor.counterfactual is not None else self.base

    def scope(self, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the best-matching edit and the probability that the row falls in its scope."""
        classifier = self.editor.classifier
        probs = classifier.logits(classifier.similarities(self.features, ids, mask, self.keys)).sigmoid()
        best, index = probs.max(-1)
        return index, best

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.base(input_ids=input_ids, attention_mask=attention_mask).logits
        if not self.requests:
            return SimpleNamespace(logits=logits, in_scope=torch.zeros(len(input_ids), dtype=torch.bool))
        index, prob = self.scope(input_ids, attention_mask)
        in_scope = prob > self.threshold
        rows = in_scope.nonzero().squeeze(-1)
        if len(rows):
            logits = logits.clone()
            cf_logits = conditioned_logits(self.counterfactual, self.tok, [self.contexts[i] for i in index[rows].tolist()],
                                           input_ids[rows], attention_mask[rows])
            for j, row in enumerate(rows.tolist()):
                keep = attention_mask[row].bool()
                logits[row, keep] = cf_logits[j, keep].to(logits.dtype)
        return SimpleNamespace(logits=logits, in_scope=in_scope, scope_probability=prob, matched_edit=index)

    def save_pretrained(self, *args, **kwargs):
        raise AdapterkitError("SERAC leaves the base model's weights unchanged and answers through its edit memory, "
                              "so there is no edited checkpoint to write",
                              fix="keep the base checkpoint and the SERAC archive, and apply the requests again when loading")
