"""The built-in methods described: every class attribute (name, schema, settings class, the keys detect fills,
the keys that decide a trained editor's shape), and nothing that edits.

This module imports no torch, so detect, validate and the hyperparameter checks read a method here without
building it. Each method's own module subclasses its class here and adds the editing (``rome.ROME`` is a
``described.ROME``); the registry checks that when it builds one.
"""
from __future__ import annotations

from .base import LocateThenEditMethod, TrainedEditMethod
from ..settings.methods import (AlphaEditSettings, MEMITSettings, MENDSettings, PMETSettings, ROMESettings, SERACSettings)


class ROME(LocateThenEditMethod):
    name = "ROME"
    schema = "rome"
    settings_class = ROMESettings


class MEMIT(LocateThenEditMethod):
    name = "MEMIT"
    schema = "memit"
    settings_class = MEMITSettings


class AlphaEdit(LocateThenEditMethod):
    name = "AlphaEdit"
    schema = "alphaedit"
    settings_class = AlphaEditSettings
    layer_rules_from = "MEMIT"  # AlphaEdit edits MEMIT's layers in the paper


class PMET(LocateThenEditMethod):
    name = "PMET"
    schema = "pmet"
    settings_class = PMETSettings
    layer_rules_from = "MEMIT"  # PMET edits MEMIT's layers in the paper
    template_keys = {
        "rewrite_module_tmp": "mlp_out",
        "rewrite_module_tmps": ["mlp_out"],
        "layer_module_tmp": "layer",
        "mlp_module_tmp": "mlp_out",
        "attn_module_tmp": "attn_out",
        "ln_f_module": "ln_f",
        "lm_head_module": "lm_head",
    }


class MEND(TrainedEditMethod):
    name = "MEND"
    schema = "mend"
    settings_class = MENDSettings
    # settings that decide the editor's shape: an archive only loads where they are the same
    structural_keys = ("rank", "n_hidden", "init", "norm", "combine", "x_only", "delta_only", "one_sided",
                       "shared", "act", "mlp_class")


class SERAC(TrainedEditMethod):
    name = "SERAC"
    schema = "serac"
    settings_class = SERACSettings
    # settings that decide the editor's shape: an archive only loads where they are the same
    structural_keys = ("cls_encoder", "cls_layer", "cls_pooling", "cls_dim", "cf_num_layers", "small_name", "freeze_cntr")
