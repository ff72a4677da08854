"""Hyperparameters checked against the loaded model: every layer, module template and inner parameter exists."""
from __future__ import annotations

from typing import Any, Mapping

from ..arch.config_checks import is_count
from ..errors import SchemaError


def module_keys(hparams: Mapping[str, Any]) -> dict[str, list[str]]:
    """EasyEdit's module keys: ``*_tmp`` / ``*_tmps`` templates and ``*_module`` names, each as a list."""
    keys = {}
    for key, value in hparams.items():
        if key.endswith(("_tmp", "_tmps", "_module")) and value is not None:
            keys[key] = list(value) if isinstance(value, (list, tuple)) else [value]
    return keys


def check_hparams_against_model(hparams: Mapping[str, Any], model, spec, where: str) -> None:
    """Every layer, module template and inner parameter of ``hparams`` exists in ``model``."""
    num_layers = spec.num_layers(model.config)
    layers = hparams.get("layers") or []
    outside = [layer for layer in layers if not (is_count(layer) and 0 <= layer < num_layers)]
    if outside:
        raise SchemaError(f"{where}#/layers: layers {outside} do not fit a model of {num_layers} layers",
                          fix=f"use layers 0..{num_layers - 1} (`adapterkit detect MODEL` writes fitting ones)")
    modules = dict(model.named_modules())
    detect_hint = "these hparams were written for another architecture? `adapterkit detect MODEL` writes this model's"
    for key, values in module_keys(hparams).items():
        for j, template in enumerate(values):
            pointer = f"{where}#/{key}" + (f"/{j}" if isinstance(hparams[key], (list, tuple)) else "")
            if not isinstance(template, str):
                raise SchemaError(f"{pointer}: {template!r} is not a module name", fix="write module names as strings")
            names = [template.replace("{}", str(layer)) for layer in (layers or [0])] if "{}" in template else [template]
            absent = [name for name in names if name not in modules]
            if absent:
                raise SchemaError(f"{pointer}: the model has no module {absent[0]!r} ({type(model).__name__})",
                                  fix=f"{detect_hint} ({key}: {_role_hint(spec, key)})")
    parameters = {name for name, _ in model.named_parameters()}
    for j, name in enumerate(hparams.get("inner_params") or []):
        if name not in parameters:
            raise SchemaError(f"{where}#/inner_params/{j}: the model has no parameter {name!r}",
                              fix="name weights as in model.named_parameters(); `adapterkit detect MODEL --method MEND` writes them")


def _role_hint(spec, key: str) -> str:
    """The template this model's declaration gives for a key's role, where the key names one."""
    roles = {"layer_module_tmp": "layer", "mlp_module_tmp": "mlp", "attn_module_tmp": "attn",
             "ln_f_module": "ln_f", "lm_head_module": "lm_head"}
    role = roles.get(key)
    if role is None or not spec.has_role(role):
        return f"see the {spec.name} declaration ({spec.source})"
    return f"{spec.name} uses {spec.template(role)!r}"
