"""Hyperparameters checked against a model: every layer, module template and inner parameter exists in it.

One check, two ways to see the model: the loaded model (``check_hparams_against_model``, before an edit) and a
checkpoint's tensor names (``validate FILE --model CKPT``); both hand ``model_problems`` the model's names.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..arch.config_checks import is_count
from ..arch.schema import format_problems, schema_properties
from ..errors import AdapterkitError, SchemaError

Problem = tuple[str, str, str]  # JSON pointer, what is wrong, the fix


@dataclass
class ModelNames:
    """What the check needs of a model: its module and weight names, depth, whether the head is tied, and the name
    messages give it (a checkpoint's path, or the model's class)."""
    modules: set[str]
    weights: set[str]
    num_layers: int
    label: str
    tied: set[str] = field(default_factory=set)  # the lm-head's and the embedding's weight, where they are one tensor
    detect_as: str = "MODEL"  # how the fixes' `adapterkit detect ...` names the model

    @classmethod
    def of_model(cls, model, spec) -> "ModelNames":
        modules = {name for name, _ in model.named_modules()}
        weights = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        tied = {spec.weight_name("lm_head"), spec.weight_name("embed")} if spec.lm_head_tied(model.config) else set()
        return cls(modules, weights, spec.num_layers(model.config), type(model).__name__, tied)


def check_layers(layers: Sequence[int], num_layers: int, where: str = "hparams") -> list[int]:
    """The edit layers, sorted, or an AdapterkitError naming those outside the model's depth (or none at all)."""
    outside = [layer for layer in layers if not (is_count(layer) and 0 <= layer < num_layers)]
    if outside or not layers:
        raise AdapterkitError(f"{where}: layers {list(outside or layers)} do not fit a model of {num_layers} layers",
                              fix=f"use layers 0..{num_layers - 1} (`adapterkit detect` picks them for this depth)")
    return sorted(int(layer) for layer in layers)


def model_problems(hparams: Mapping[str, Any], names: ModelNames, spec, method) -> list[Problem]:
    """Every layer, ``v_loss_layer``, module template (at each edit layer) and module path of ``hparams`` that the
    model lacks, each with the fix; only keys the method's schema reads are checked (others are unknown keys)."""
    properties, _ = schema_properties(method.schema)
    problems = []
    layers = list(hparams.get("layers") or []) if "layers" in properties else []
    for i, layer in enumerate(layers):
        if not (is_count(layer) and 0 <= layer < names.num_layers):
            problems.append((f"/layers/{i}", f"layer {layer} does not exist ({names.label} has {names.num_layers})",
                             f"use 0..{names.num_layers - 1} (`adapterkit detect {names.detect_as}` writes fitting layers)"))
    loss_layer = hparams.get("v_loss_layer") if "v_loss_layer" in properties else None
    if is_count(loss_layer) and loss_layer >= names.num_layers:
        problems.append(("/v_loss_layer", f"layer {loss_layer} does not exist ({names.label} has {names.num_layers})",
                         f"use the last layer, {names.num_layers - 1} (what `adapterkit detect` writes)"))
    at_layers = sorted({layer for layer in layers if is_count(layer) and 0 <= layer < names.num_layers}) or [0]
    for key, value in hparams.items():
        if key in properties and key.endswith(("_tmp", "_tmps", "_module")) and value is not None:
            for j, path in enumerate(value if isinstance(value, (list, tuple)) else [value]):
                pointer = f"/{key}/{j}" if isinstance(value, (list, tuple)) else f"/{key}"
                problems += _module_path_problems(key, pointer, path, at_layers, names, spec, method)
    for j, name in enumerate(hparams.get("inner_params") or [] if "inner_params" in properties else []):
        if name in names.tied:
            other = (names.tied - {name}).pop()
            problems.append((f"/inner_params/{j}", f"{name!r} is one tensor with {other!r} in {names.label} (tied lm-head): "
                             "MEND would edit both", "list the MLP weights `adapterkit detect --method mend` writes"))
        elif name not in names.weights:
            problems.append((f"/inner_params/{j}", f"{name!r} is not a weight of {names.label}",
                             f"name weights as in model.named_parameters(); `adapterkit detect {names.detect_as} --method MEND` writes them"))
    return problems


def check_hparams_against_model(hparams: Mapping[str, Any], model, spec, where: str, method) -> None:
    """Refuse (SchemaError naming each JSON pointer and its fix) hparams that name what ``model`` lacks."""
    problems = model_problems(hparams, ModelNames.of_model(model, spec), spec, method)
    if problems:
        raise SchemaError(format_problems(where, problems))


def _module_path_problems(key, pointer, path, layers, names: ModelNames, spec, method) -> list[Problem]:
    """A module template (at each edit layer) or module path that is not a module of the model, or, for the
    rewritten modules, one without a weight; the fix names what detect writes for this architecture."""
    if not isinstance(path, str):
        return [(pointer, f"{path!r} is not a module name", "write module names as strings")]
    for layer in layers if "{}" in path else [None]:
        name = path.replace("{}", str(layer)) if layer is not None else path
        if name not in names.modules:
            what = f"{name!r} is not a module of {names.label}"
        elif key.startswith("rewrite_module_tmp") and f"{name}.weight" not in names.weights:
            what = f"{name!r} has no weight to rewrite in {names.label}"
        else:
            continue
        return [(pointer, what, _template_fix(key, name, spec, method, names))]
    return []


def _template_fix(key, name, spec, method, names: ModelNames) -> str:
    role = method.template_keys.get(key) if method is not None else None
    if isinstance(role, list):
        role = role[0] if len(role) == 1 else None
    if role is not None and spec.has_role(role):
        return f"use {spec.template(role)!r}, the {spec.name} declaration's template (`adapterkit detect {names.detect_as}` writes it)"
    close = difflib.get_close_matches(name, sorted(names.modules), n=3, cutoff=0.6)
    return (f"name a module of the model{'; closest: ' + ', '.join(close) if close else ''} "
            f"(`adapterkit detect {names.detect_as}` writes this architecture's templates)")
