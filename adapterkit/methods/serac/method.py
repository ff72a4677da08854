"""SERAC, the method: load a trained editor and return the answerer."""
from __future__ import annotations

from ...editing.tokens import model_device
from .. import described
from ...settings.methods import SERACSettings
from .answerer import SeracAnswerer
from .editor import SeracEditor, build_editor
from .features import frozen_features
from .task import SeracTask


class SERAC(described.SERAC):
    def apply(self, model, tok, requests, settings: SERACSettings, *, spec, ledger, archive=None):
        device = model_device(model)
        editor = self.load_editor(archive or settings.archive, model, spec, settings)
        editor.to(device).eval()
        features = frozen_features(settings, model, spec, tok, device)
        return SeracAnswerer(model, editor, features, tok, requests, settings.cls_threshold).eval()

    def build_editor(self, model, spec, settings: SERACSettings, metadata) -> SeracEditor:
        return build_editor(model, spec, settings, feature_dim=int(metadata["feature_dim"]),
                            vocab_size=int(metadata["vocab_size"]))

    def make_task(self, model, tok, spec, settings: SERACSettings, device, train_set):
        return SeracTask(model, tok, spec, settings, device, train_set)
