"""Method hyperparameters, with EasyEdit's key names, checked against the method's schema and built into its settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .errors import SchemaError
from .methods.settings import MethodSettings
from .safe_load import load_yaml
from .schema import schema_problems, format_problems


def read_hparams(source: str | Path | Mapping[str, Any]) -> tuple[dict, str]:
    if isinstance(source, Mapping):
        return dict(source), "<hparams>"
    path = Path(source)
    if not path.is_file():
        raise SchemaError(f"{path}: no such hyperparameter file", fix="run `adapterkit detect MODEL --method NAME -o FILE` to write one")
    document = load_yaml(path, error=SchemaError, what="hyperparameter file")
    if not isinstance(document, dict):
        raise SchemaError(f"{path}: a hyperparameter file is a mapping of keys to values",
                          fix="run `adapterkit detect MODEL --method NAME -o FILE` to write one")
    return document, str(path)


def hparams_problems(document: Mapping[str, Any], registry) -> list[tuple[str, str, str]]:
    alg = document.get("alg_name")
    if not isinstance(alg, str):
        return [("/alg_name", "alg_name is missing", f"set alg_name to one of {sorted(registry.methods)}")]
    if alg.upper() not in registry.methods:
        return [("/alg_name", f"unknown method {alg!r}", f"use one of {sorted(registry.methods)}")]
    return schema_problems(document, registry.method(alg).schema)


def load_hparams(source, registry=None) -> dict:
    """Read and validate hyperparameters; errors name the file, the JSON pointer and the fix."""
    from .registry import get_registry

    registry = registry or get_registry()
    document, where = read_hparams(source)
    problems = hparams_problems(document, registry)
    if problems:
        raise SchemaError(format_problems(where, problems))
    return document


def load_settings(source, registry=None) -> MethodSettings:
    """The method's typed settings from a hyperparameter file or dict, built once, right after the schema check.

    Settings already built are checked against the schema and returned as they are."""
    from .registry import get_registry

    registry = registry or get_registry()
    if isinstance(source, MethodSettings):
        method = registry.method(source.alg_name)
        if not isinstance(source, method.settings_class):
            raise SchemaError(f"settings of type {type(source).__name__} given for {method.name}, "
                              f"which takes {method.settings_class.__name__}",
                              fix=f"build them with {method.settings_class.__name__}.from_hparams, or pass the hparams dict")
        problems = hparams_problems(source.to_dict(), registry)
        if problems:
            raise SchemaError(format_problems(f"<{type(source).__name__}>", problems))
        return source
    document = load_hparams(source, registry)
    return registry.method(document["alg_name"]).settings(document)
