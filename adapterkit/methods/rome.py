"""ROME: Rank-One Model Editing (Meng et al., 2022, "Locating and Editing Factual Associations in GPT").

For each request, at each edit layer (usually one):
  1. k* (compute_u): the MLP output projection's input at the subject's last token, averaged over
     context templates; with ``mom2_adjustment`` it is whitened by the keys' second moment, C^-1 k*.
  2. v* (compute_v): the MLP output at that token which makes the model say the new object (values.py).
  3. The rank-one update W += (v* - W k) (C^-1 k*)^T / ((C^-1 k*)^T k), so W k* = v* and other keys
     move least (in C's metric). Requests are edited one after another, each on the model the last left.
"""
from __future__ import annotations

import torch

from ..editing import speedups
from ..editing.hooks import frozen
from ..editing.progress import progress
from ..editing.keys import context_keys, context_mean, module_io
from ..editing.tokens import plain_prompts
from ..editing.stats import get_mom2
from ..editing.update import apply_update
from ..editing.values import LossSettings, context_templates, value_options, optimise_values
from . import described
from ..settings.methods import ROMESettings


class ROME(described.ROME):
    def apply(self, model, tok, requests, settings: ROMESettings, *, spec, ledger, archive=None):
        num_layers, layers = self.edit_layers(model, settings, spec)
        with frozen(model):
            templates = [[c for group in context_templates(model, tok, settings) for c in group]]  # ROME averages them flat
            for request in progress(requests, desc="ROME edits", unit="edit"):
                for layer in layers:
                    self.edit_layer(model, tok, request, settings, layer, templates, spec, ledger, num_layers)
        return None

    def edit_layer(self, model, tok, request, settings: ROMESettings, layer, templates, spec, ledger, num_layers) -> None:
        rewrite = settings.rewrite_module_tmp.format(layer)
        value_point = settings.mlp_module_tmp.format(layer)
        value_settings, options = LossSettings.from_settings(settings), value_options(settings, num_layers, layer)
        if speedups.active():
            # The value optimisation's first forward also holds the keys (and the rewrite's current output) at the
            # subject in every context: one forward instead of three.
            observed = {rewrite: None}
            v_star = optimise_values(model, tok, [request], [value_point], templates, settings.fact_token, value_settings,
                                     observed=observed, **options)[value_point][0]
            keys, outputs = observed[rewrite]
            per_request = [len(group) for group in templates]
            u = self.whitened(model, tok, settings, layer, spec, context_mean(keys[: sum(per_request)].float(), per_request)[0])
            k_now, v_now = keys[:1], outputs[:1]
        else:
            u = self.left_vector(model, tok, request, settings, layer, templates, spec)
            v_star = optimise_values(model, tok, [request], [value_point], templates, settings.fact_token, value_settings,
                                     **options)[value_point][0]
            k_now, v_now = module_io(model, tok, plain_prompts([request]), settings.fact_token, rewrite)
        right = (v_star.double() - v_now[0].double().to(v_star.device)) / (k_now[0].double().to(u.device) @ u)
        apply_update(ledger, spec, f"{rewrite}.weight", left=right, right=u.to(right.device))

    def left_vector(self, model, tok, request, settings: ROMESettings, layer, templates, spec) -> torch.Tensor:
        """k* averaged over contexts; C^-1 k* with mom2_adjustment; normalised (compute_u)."""
        key = context_keys(model, tok, [request], templates, settings.fact_token, settings.rewrite_module_tmp.format(layer))[0]
        return self.whitened(model, tok, settings, layer, spec, key)

    def whitened(self, model, tok, settings: ROMESettings, layer, spec, key: torch.Tensor) -> torch.Tensor:
        """C^-1 k* with mom2_adjustment, else k*; normalised."""
        u = key.double()
        if settings.mom2_adjustment:
            mom2 = get_mom2(model, spec, settings, layer, tok=tok, template=settings.rewrite_module_tmp).to(u.device, torch.float64)
            u = torch.linalg.solve(mom2, u)
        return u / u.norm()
