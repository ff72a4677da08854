"""What a SERAC archive holds, and how it is built from the settings."""
from __future__ import annotations

from torch import nn

from ...settings.methods import SERACSettings
from .counterfactual import counterfactual_model
from .scope import ScopeClassifier


class SeracEditor(nn.Module):
    """What an archive holds: the scope classifier and the counterfactual model (unless it is the frozen base)."""

    def __init__(self, classifier: ScopeClassifier, counterfactual: nn.Module | None):
        super().__init__()
        self.classifier = classifier
        self.counterfactual = counterfactual


def build_editor(model, spec, settings: SERACSettings, feature_dim: int, vocab_size: int) -> SeracEditor:
    classifier = ScopeClassifier(feature_dim, settings.cls_dim, vocab_size, settings.cls_pooling)
    cf = counterfactual_model(model, spec, settings)
    if cf is not None:
        cf.eval()
        for p in cf.parameters():
            p.requires_grad_(True)
    return SeracEditor(classifier, cf)
