"""What a SERAC archive holds, and how it is built from hparams."""
from __future__ import annotations

from torch import nn

from .counterfactual import counterfactual_model
from .scope import ScopeClassifier

# hparams that decide the editor's shape: an archive only loads where they are the same
STRUCTURAL_KEYS = ("cls_encoder", "cls_layer", "cls_pooling", "cls_dim", "cf_num_layers", "small_name", "freeze_cntr")


class SeracEditor(nn.Module):
    """What an archive holds: the scope classifier and the counterfactual model (unless it is the frozen base)."""

    def __init__(self, classifier: ScopeClassifier, counterfactual: nn.Module | None):
        super().__init__()
        self.classifier = classifier
        self.counterfactual = counterfactual


def build_editor(model, spec, hp, feature_dim: int, vocab_size: int) -> SeracEditor:
    classifier = ScopeClassifier(feature_dim, hp.get("cls_dim"), vocab_size, hp["cls_pooling"])
    cf = counterfactual_model(model, spec, hp)
    if cf is not None:
        cf.eval()
        for p in cf.parameters():
            p.requires_grad_(True)
    return SeracEditor(classifier, cf)
