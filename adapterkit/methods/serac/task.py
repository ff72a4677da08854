"""Training SERAC: the scope classifier's and the counterfactual model's losses, and validation."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...editing import batches, losses
from ...editing.metrics import encode_pairs
from ...requests import EditRequest
from .answerer import SeracAnswerer
from .counterfactual import conditioned_logits, edit_ids
from ...settings.methods import SERACSettings
from .editor import build_editor
from .features import frozen_features
from .scope import prompt_ids


class SeracTask:
    """What the shared trainer needs: the editor, its parameter groups, one training step, validation."""

    def __init__(self, model, tok, spec, settings: SERACSettings, device, train_set: Sequence[EditRequest]):
        self.model, self.tok, self.spec, self.settings, self.device = model, tok, spec, settings, device
        self.features = frozen_features(settings, model, spec, tok, device)
        self.vocab_size = max(len(tok), spec.vocab_size(model.config))
        self.editor = build_editor(model, spec, settings, self.features.dim, self.vocab_size).to(device)
        self.fit_classifier(train_set)
        self.answers = batches.answer_pool(train_set)

    def fit_classifier(self, requests) -> None:
        texts = [r.prompt for r in requests] + [p for r in requests for p in (*r.rephrase_prompts, *r.locality_prompts)]
        templates = [p.replace(r.subject, " ") for r in requests for p in (r.prompt, *r.rephrase_prompts)]
        self.editor.classifier.fit(self.features, prompt_ids(self.tok, texts, self.device),
                                   prompt_ids(self.tok, templates, self.device))

    @property
    def counterfactual(self):
        return self.editor.counterfactual if self.editor.counterfactual is not None else self.model

    def param_groups(self):
        classifier = self.editor.classifier
        classifier.project.weight.requires_grad_(self.settings.cls_train_projection)
        cls_lr = self.settings.cls_lr if self.settings.cls_lr is not None else self.settings.lr
        groups = [{"params": [p for p in classifier.parameters() if p.requires_grad], "lr": cls_lr}]
        if self.editor.counterfactual is not None:
            groups.append({"params": list(self.editor.counterfactual.parameters()), "lr": self.settings.lr})
        return groups

    def archive_metadata(self) -> dict:
        return {"method": "SERAC", "architecture": self.spec.name, "feature_dim": self.features.dim, "vocab_size": self.vocab_size,
                "hparams": self.settings.to_dict()}

    # --- losses -----------------------------------------------------------------------------------------
    def scope_queries(self, requests):
        """(prompt, answer, edit index or -1) for every query of the batch, bare and with its answer appended:
        in scope, each edit's prompt and rephrases; out of scope, its locality prompts and near misses."""
        rows = []
        for i, r in enumerate(requests):
            for prompt in (r.prompt, *r.rephrase_prompts):
                rows += [(prompt, "", i), (prompt, r.target_new, i)]
            answers = r.locality_ground_truths or ("",) * len(r.locality_prompts)
            for prompt, answer in zip(r.locality_prompts, answers):
                rows += [(prompt, "", -1), (prompt, answer, -1)]
            near_miss = self.near_miss(r, requests[(i + 1) % len(requests)])
            if near_miss is not None:
                rows += [(near_miss, "", -1), (near_miss, r.target_new, -1)]
        return rows

    @staticmethod
    def near_miss(request: EditRequest, other: EditRequest) -> str | None:
        """The edit's prompt about a different subject that shares its first word ("Le Iene" -> "Le Gendarme"):
        teaches the classifier that a query must name the whole subject, not part of it."""
        words, other_words = request.subject.split(), other.subject.split()
        if len(words) < 2 or len(other_words) < 2 or other_words[1:] == words[1:]:
            return None
        return request.prompt.replace(request.subject, " ".join(words[:1] + other_words[1:]), 1)

    def scope_loss(self, requests):
        classifier = self.editor.classifier
        keys = classifier.keys(self.features, self.tok, requests, self.device)
        rows = self.scope_queries(requests)
        ids, mask, _ = encode_pairs(self.tok, [p for p, _, _ in rows], [a for _, a, _ in rows])
        logits = classifier.logits(classifier.similarities(self.features, ids.to(self.device), mask.to(self.device), keys))
        owner = torch.tensor([i for _, _, i in rows], device=self.device)
        positive = owner[:, None] == torch.arange(len(requests), device=self.device)[None]
        bce = nn.functional.binary_cross_entropy_with_logits(logits, positive.float(), reduction="none")
        in_scope = bce[positive].mean()
        out_of_scope = bce[~positive].mean() if (~positive).any() else bce.sum() * 0
        return in_scope, out_of_scope

    def counterfactual_loss(self, requests):
        pairs = [(i, p) for i, r in enumerate(requests) for p in (r.prompt, *r.rephrase_prompts)]
        ids, mask, labels = losses.target_labels(self.tok, [p for _, p in pairs],
                                                   [requests[i].target_new for i, _ in pairs], self.device)
        contexts = [edit_ids(self.tok, requests[i]) for i, _ in pairs]
        logits = conditioned_logits(self.counterfactual, self.tok, contexts, ids, mask)
        return losses.mean_nll(logits, labels)

    def losses(self, requests, augment: bool = False):
        in_scope, out_of_scope = self.scope_loss(requests)
        # with random targets too, the counterfactual model must read the answer from the edit in its context
        extra = batches.with_random_targets(requests, self.answers) if augment else []
        l_cf = self.counterfactual_loss(list(requests) + extra)
        l_edit = l_cf + in_scope
        total = self.settings.cedit * l_edit + self.settings.cloc * out_of_scope
        return total, l_edit, out_of_scope, l_cf

    def train_step(self, requests):
        total, l_edit, l_loc, l_cf = self.losses(requests, augment=self.settings.cf_random_targets)
        return total, {"loss/edit": l_edit.item(), "loss/loc": l_loc.item(), "loss/cf": l_cf.item()}

    @torch.no_grad()
    def validate(self, requests):
        total, l_edit, l_loc, l_cf = self.losses(requests)
        answerer = SeracAnswerer(self.model, self.editor, self.features, self.tok, requests, self.settings.cls_threshold)
        quality = losses.edit_quality(lambda i, m: self.model(input_ids=i, attention_mask=m).logits,
                                        lambda i, m: answerer(input_ids=i, attention_mask=m).logits,
                                        self.tok, requests, self.device)
        return {"loss/total_edit": total.item(), "loss/edit": l_edit.item(), "loss/loc": l_loc.item(),
                "loss/cf": l_cf.item(), **quality}
