"""`adapterkit validate`: schema and semantic checks for plugin declarations and hyperparameter files."""
from __future__ import annotations

from pathlib import Path

from ..errors import AdapterkitError, SchemaError
from .registry import get_registry, load_declaration
from ..files.safe_load import load_yaml
from .schema import format_problems, schema_problems


def validate_file(path, model_path=None, *, allow_partial: bool = False, strict: bool = False) -> str:
    """Problems found in ``path`` as one printable report; empty when it is valid.

    A hyperparameter file's unknown keys are warned about (``UnknownKeyWarning``); ``strict`` reports them as problems."""
    path = Path(path)
    document = load_yaml(path, error=SchemaError, what="declaration or hyperparameter file")
    if not isinstance(document, dict):
        return f"{path}: expected a mapping at the top level"
    if "alg_name" in document or "alg" in document:  # an editing file, or an EasyEdit training file
        problems = hparams_file_problems(document, model_path, allow_partial=allow_partial, where=str(path), strict=strict)
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
    from ..checkpoints.build import meta_tensor_index
    from .detect import check_checkpoint
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

    from ..checkpoints.build import build_model
    from .inference import value_point_problems

    with torch.device("meta"):
        model = build_model(declaration["tiny_config"], spec)
    return value_point_problems(declaration, model.eval())


def hparams_file_problems(document, model_path=None, *, allow_partial: bool = False, where: str = "<hparams>",
                          strict: bool = False) -> list[tuple[str, str, str]]:
    """The schema's problems (number text such as EasyEdit's 1e-3 read as numbers first), then, with ``model_path``,
    every layer, template and module path against that checkpoint. Unknown keys are warned about, or with
    ``strict`` are problems too."""
    from ..settings.hparams import checked_hparams, report_unknown_keys, unknown_key_problems

    registry = get_registry()
    document, problems = checked_hparams(document, registry, where)
    method = registry.method_description(document["alg_name"]) if "alg_name" in document and not problems else None
    if method is not None:
        if strict:
            problems += unknown_key_problems(document, method)
        else:
            report_unknown_keys(document, method, where, strict=False)
    if problems or model_path is None:
        return sorted(problems)
    from ..settings.easyedit import path_problems

    return _hparams_against_model(document, method, model_path, allow_partial) + path_problems(document)


def _hparams_against_model(document, method, model_path, allow_partial: bool = False) -> list[tuple[str, str, str]]:
    from ..checkpoints.loading import read_config, read_tensor_index
    from ..checkpoints.build import meta_tensor_index
    from ..checkpoints.checks import check_weights_cover_model
    from ..settings.against_model import ModelNames, model_problems

    config = read_config(model_path)
    spec = get_registry().for_config(config, infer=True)
    index = read_tensor_index(model_path)
    check_weights_cover_model(index, config, spec, model_path, allow_partial=allow_partial)
    weights = {spec.model_tensor_name(n) for n in (index or meta_tensor_index(config, spec)).names}
    modules = {name.rsplit(".", i)[0] for name in weights for i in range(1, name.count(".") + 1)}
    modules |= _parameterless_modules(config, spec)
    if spec.lm_head_tied(config):  # stored once, under the embedding's name
        weights.add(spec.weight_name("lm_head"))
        modules.add(spec.module_name("lm_head"))
    tied = {spec.weight_name("lm_head"), spec.weight_name("embed")} if spec.lm_head_tied(config) else set()
    names = ModelNames(modules, weights, spec.num_layers(config), str(model_path), tied, detect_as=str(model_path))
    return model_problems(document, names, spec, method)


def _parameterless_modules(config, spec) -> set[str]:
    """Modules that leave no tensor in a checkpoint (OLMo's final LayerNorm has no parameters), from a meta build."""
    from ..checkpoints.build import meta_model

    return {name for name, module in meta_model(config, spec).named_modules()
            if name and next(module.parameters(), None) is None}


