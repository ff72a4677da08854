"""PMET: Precise Model Editing in a Transformer (Li et al., AAAI 2024).

MEMIT edits the residual stream at the top edit layer; PMET observes that the attention and FFN
outputs there (the "transformer component" hidden states) carry different knowledge, so:
  1. z_attn, z_mlp: deltas on the attention output and the FFN output at the top edit layer L,
     optimised jointly for every request (values.py), with MEMIT's loss.
  2. For each layer l and each rewrite module (``rewrite_module_tmps``: by default the FFN output
     projection alone, as in the paper and EasyEdit; list ``attn_module_tmp`` too and the attention output
     projection is rewritten with its own z_attn): keys at l on the model as edited so far,
     residuals R = (z - current component output at L) / sqrt(layers left), and
     Delta = R K^T (lambda C + K K^T)^-1 with the module's own key second moment C.
"""
from __future__ import annotations

import math

from ..editing.hooks import frozen
from ..editing.keys import context_keys, module_io
from ..editing.tokens import plain_prompts
from ..editing.stats import get_mom2
from ..editing.update import apply_update, spread_update
from ..editing.values import LossSettings, context_templates, value_optimiser, value_options
from ..errors import AdapterkitError
from . import described
from ..settings.methods import PMETSettings


class PMET(described.PMET):
    def apply(self, model, tok, requests, settings: PMETSettings, *, spec, ledger, archive=None, carried=None):
        num_layers, layers = self.edit_layers(model, settings, spec)
        components = [settings.attn_module_tmp, settings.mlp_module_tmp]
        rewrites = self.rewrite_templates(settings, components)
        points = [c.format(layers[-1]) for c in components]
        optimiser = value_optimiser(model)
        with frozen(model):
            templates = context_templates(model, tok, settings)
            zs = optimiser.optimise(model, tok, requests, points, templates, settings.fact_token, LossSettings.from_settings(settings),
                                    **value_options(settings, num_layers, layers[-1]), batch_size=settings.v_batch_size).values
            for i, layer in enumerate(layers):
                for template in rewrites:
                    top = template.format(layers[-1])
                    keys = context_keys(model, tok, requests, templates, settings.fact_token, template.format(layer))
                    _, now = module_io(model, tok, plain_prompts(requests), settings.fact_token, top, want="output")
                    residuals = (zs[top] - now.float().to(zs[top].device)) / math.sqrt(len(layers) - i)
                    mom2 = (get_mom2(model, spec, settings, layer, tok=tok, template=template)
                            if settings.mom2_adjustment else None)
                    weight = f"{template.format(layer)}.weight"
                    earlier = carried.keys_moment(weight) if carried is not None else None
                    delta = spread_update(keys, residuals, mom2, settings.mom2_update_weight, earlier)
                    apply_update(ledger, spec, weight, delta)
                    if carried is not None:
                        carried.add_keys(weight, keys)
        return None

    @staticmethod
    def rewrite_templates(settings: PMETSettings, components) -> list[str]:
        rewrites = settings.rewrite_templates
        strangers = [t for t in rewrites if t not in components]
        if strangers:
            raise AdapterkitError(
                f"PMET rewrites the modules whose outputs it optimises, but rewrite_module_tmps has {strangers}, "
                f"which is neither attn_module_tmp ({components[0]!r}) nor mlp_module_tmp ({components[1]!r})",
                fix="make each rewrite_module_tmps entry equal to attn_module_tmp or mlp_module_tmp")
        return rewrites
