"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al., 2023).

For a batch of requests and a range of MLP layers l_1 < ... < L:
  1. z_i (compute_z): the residual stream at layer L, at each subject's last token, that makes the model
     say the new object (values.py; all requests optimised together, each with its own delta).
  2. For each layer l in order: keys K (the output projection's input at the subject, averaged over
     context templates) on the model as edited so far; residuals R = (z - h^L) / (layers left), so each
     remaining layer takes an equal share; and the least-squares update
     Delta = R K^T (lambda C + K K^T)^-1, with C the keys' second moment and lambda ``mom2_update_weight``.
"""
from __future__ import annotations

from ..editing.hooks import frozen
from ..editing.keys import context_keys, module_io
from ..editing.tokens import plain_prompts
from ..editing.stats import get_mom2
from ..editing.update import apply_update, spread_update
from ..editing.values import LossSettings, context_templates, value_optimiser, value_options
from . import described
from ..settings.methods import MEMITSettings


class MEMIT(described.MEMIT):
    def apply(self, model, tok, requests, settings: MEMITSettings, *, spec, ledger, archive=None, carried=None):
        num_layers, layers = self.edit_layers(model, settings, spec)
        top = settings.layer_module_tmp.format(layers[-1])
        optimiser = value_optimiser(model)
        with frozen(model):
            templates = context_templates(model, tok, settings)
            zs = optimiser.optimise(model, tok, requests, [top], templates, settings.fact_token, LossSettings.from_settings(settings),
                                    **value_options(settings, num_layers, layers[-1]), batch_size=settings.v_batch_size).values[top]
            for i, layer in enumerate(layers):
                rewrite = settings.rewrite_module_tmp.format(layer)
                keys = context_keys(model, tok, requests, templates, settings.fact_token, rewrite)
                _, now = module_io(model, tok, plain_prompts(requests), settings.fact_token, top, want="output")
                residuals = (zs - now.float().to(zs.device)) / (len(layers) - i)
                mom2 = get_mom2(model, spec, settings, layer, tok=tok) if settings.mom2_adjustment else None
                weight = f"{rewrite}.weight"
                earlier = carried.keys_moment(weight) if carried is not None else None
                delta = self.layer_update(keys, residuals, mom2, settings, earlier=earlier)
                apply_update(ledger, spec, weight, delta)
                if carried is not None:
                    carried.add_keys(weight, keys)
        return None

    def layer_update(self, keys, residuals, mom2, settings: MEMITSettings, earlier=None):
        """One layer's update ([out, in]) from its keys [n, in], residuals [n, out] and key second moment;
        ``earlier``: a stream's earlier edits' keys' second moment (carried.py), or None."""
        return spread_update(keys, residuals, mom2, settings.mom2_update_weight, earlier)
