"""`adapterkit validate`: schema and semantic checks for plugin declarations and hyperparameter files."""
from __future__ import annotations

from pathlib import Path

from .errors import AdapterkitError, SchemaError
from .registry import get_registry, load_declaration
from .safe_load import load_yaml
from .schema import format_problems, schema_problems


def validate_file(path, model_path=None, *, allow_partial: bool = False) -> str:
    """Problems found in ``path`` as one printable report; empty when it is valid."""
    path = Path(path)
    document = load_yaml(path, error=SchemaError, what="declaration or hyperparameter file")
    if not isinstance(document, dict):
        return f"{path}: expected a mapping at the top level"
    if "alg_name" in document:
        problems = hparams_file_problems(document, model_path, allow_partial=allow_partial)
    else:
        problems = declaration_problems(path)
    return format_problems(str(path), problems) if problems else ""


def declaration_problems(path) -> list[tuple[str, str, str]]:
    from .families import expand

    declaration, where = load_declaration(path)
    problems = schema_problems(declaration, "architecture")
    if problems:
        return problems
    for expanded, pointer in expand(declaration):
        found = schema_problems(expanded, "architecture")
        if not found:
            found = _layer_rule_problems(expanded) + _conflicts(expanded) + _tiny_model_problems(expanded, where)
        # a variant's problem may sit in a field it inherits; its pointer names the variant for context
        problems += [(pointer + p, message, fix) for p, message, fix in found]
    return problems


def _layer_rule_problems(declaration) -> list[tuple[str, str, str]]:
    problems = []
    for method, defaults in declaration.get("defaults", {}).items():
        rules = {"layers": defaults.get("layers"), "inner_params/layers": (defaults.get("inner_params") or {}).get("layers")}
        for key, rule in rules.items():
            if not rule or "of" not in rule:
                continue
            top = rule.get("to", rule.get("at"))
            if top is not None and top >= rule["of"]:
                problems.append((f"/defaults/{method}/{key}", f"layer {top} is outside a {rule['of']}-layer model",
                                 "layer indices count from 0: use at most of - 1"))
            if "from" in rule and rule["from"] > rule["to"]:
                problems.append((f"/defaults/{method}/{key}", "from is after to", "swap from and to"))
    return problems


def _conflicts(declaration) -> list[tuple[str, str, str]]:
    problems = []
    for spec in get_registry().architectures:
        if spec.name == declaration["name"]:
            continue
        shared = set(spec.model_types) & set(declaration["match"].get("model_types", []))
        if shared and spec.priority == declaration.get("priority", 0):
            problems.append(("/match/model_types", f"{sorted(shared)} already claimed by {spec.name!r} ({spec.distribution} {spec.version})",
                             "match another model type, or set a higher `priority` if this plugin should win"))
    return problems


def _tiny_model_problems(declaration, where) -> list[tuple[str, str, str]]:
    """Build the declared tiny model on the meta device and check every template resolves with the right shape."""
    from .checkpoint import meta_tensor_index
    from .autodetect import check_checkpoint
    from .spec import ArchSpec

    if "tiny_config" not in declaration:
        return [("/tiny_config", "no tiny_config: templates cannot be checked against a real model",
                 "add the config.json content of a tiny model (a few layers, small widths)")]
    spec = ArchSpec(declaration, source=where)
    try:
        check_checkpoint(spec, declaration["tiny_config"], meta_tensor_index(declaration["tiny_config"], spec), where="tiny_config model")
    except AdapterkitError as exc:
        return [("/modules", exc.message, exc.fix or "fix the module paths")]
    except Exception as exc:  # the declared classes or config could not build a model
        return [("/tiny_config", f"building the tiny model failed: {type(exc).__name__}: {exc}",
                 "make tiny_config a config.json that the declared (or Auto) classes accept")]
    return _value_point_problems(declaration, spec)


def _value_point_problems(declaration, spec) -> list[tuple[str, str, str]]:
    import torch

    from .checkpoint import build_model
    from .inference import value_point_problems

    with torch.device("meta"):
        model = build_model(declaration["tiny_config"], spec)
    return value_point_problems(declaration, model.eval())


def hparams_file_problems(document, model_path=None, *, allow_partial: bool = False) -> list[tuple[str, str, str]]:
    from .hparams import hparams_problems

    problems = hparams_problems(document, get_registry())
    if problems or model_path is None:
        return problems
    return _templates_against_model(document, model_path, allow_partial)


def _templates_against_model(document, model_path, allow_partial: bool = False) -> list[tuple[str, str, str]]:
    from .checkpoint import meta_tensor_index, read_config, read_tensor_index
    from .inputs import check_weights_cover_model

    config = read_config(model_path)
    spec = get_registry().for_config(config, infer=True)
    index = read_tensor_index(model_path)
    check_weights_cover_model(index, config, spec, model_path, allow_partial=allow_partial)
    names = set((index or meta_tensor_index(config, spec)).names)
    num_layers = spec.num_layers(config)
    problems = []
    for i, layer in enumerate(document.get("layers", [])):
        if layer >= num_layers:
            problems.append((f"/layers/{i}", f"layer {layer} does not exist ({model_path} has {num_layers})", f"use 0..{num_layers - 1}"))
    templates = {k: v for k, v in document.items() if k.endswith("_tmp") or k.endswith("_tmps")}
    for key, value in templates.items():
        for j, template in enumerate(value if isinstance(value, list) else [value]):
            name = template.format(0)
            if not any(n == name or n.startswith(name + ".") for n in names):
                pointer = f"/{key}/{j}" if isinstance(value, list) else f"/{key}"
                problems.append((pointer, f"{name!r} is not a module of {model_path}",
                                 f"use `adapterkit detect {model_path}` to get this architecture's templates"))
    tied = {spec.weight_name("lm_head"), spec.weight_name("embed")} if spec.lm_head_tied(config) else set()
    for j, name in enumerate(document.get("inner_params", [])):
        if name in tied:
            other = (tied - {name}).pop()
            problems.append((f"/inner_params/{j}", f"{name!r} is one tensor with {other!r} in {model_path} (tied lm-head): "
                             "MEND would edit both", "list the MLP weights `adapterkit detect --method mend` writes"))
        elif name not in names:
            problems.append((f"/inner_params/{j}", f"{name!r} is not a weight of {model_path}", "name weights as in model.named_parameters()"))
    return problems
