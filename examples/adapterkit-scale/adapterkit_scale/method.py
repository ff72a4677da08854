"""SCALE: multiply the output weight of the MLP at each edit layer by ``factor``.

Not a knowledge editor: the smallest method that fulfils adapterkit's contract. It brings its own settings
class and schema, takes ROME's layer rules from every architecture declaration, and changes weights only
through the ledger, so ``restore()``, deltas files and ``apply_deltas`` work for it as for ROME.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import torch

from adapterkit.methods import EditMethod, MethodSettings, published


@dataclass(frozen=True, kw_only=True)
class ScaleSettings(MethodSettings):
    layers: list[int]
    rewrite_module_tmp: str
    factor: float = published(1.0)


class Scale(EditMethod):
    name = "SCALE"
    schema = resources.files(__package__) / "scale.schema.json"
    settings_class = ScaleSettings
    template_keys = {"rewrite_module_tmp": "mlp_out"}
    layer_rules_from = "ROME"

    def apply(self, model, tok, requests, settings: ScaleSettings, *, spec, ledger, archive=None):
        with torch.no_grad():
            for layer in settings.layers:
                name = f"{settings.rewrite_module_tmp.format(layer)}.weight"
                ledger.add(name, (settings.factor - 1.0) * ledger.parameter(name).detach())
        return None
