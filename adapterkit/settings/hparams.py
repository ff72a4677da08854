"""Method hyperparameters, with EasyEdit's key names, checked against the method's schema and built into its settings."""
from __future__ import annotations

import difflib
import math
import re
import warnings
import weakref
from pathlib import Path
from typing import Any, Mapping

from ..errors import SchemaError, UnknownKeyWarning, UnsupportedMethodError
from .methods import MethodSettings
from ..files.safe_load import load_yaml
from ..arch.schema import format_problems, json_pointer, schema_problems, schema_properties


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


# EasyEdit writes 1e-3 and 5e-1, which YAML 1.1 (PyYAML) reads as strings; its dataclass loader makes them floats
NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def hparams_method(document: Mapping[str, Any], registry, where: str = "<hparams>", *, training: bool = False):
    """The method ``alg_name`` names, as its description (Registry.method_description), or None when it names none
    (a schema problem); a method adapterkit does not have, or an EasyEdit multimodal file, is refused as not supported.
    ``training``: the document came from an EasyEdit training file, which names the method ``alg``."""
    from . import easyedit

    alg = document.get("alg_name")
    if not isinstance(alg, str):
        return None
    key = easyedit.TRAINING_METHOD_KEY if training else "alg_name"
    if alg.upper() not in registry.methods:
        multimodal = easyedit.multimodal_class(alg, training=training)
        what = f" (EasyEdit's multimodal {multimodal})" if multimodal else ""
        raise UnsupportedMethodError(
            f"{where}: {key} {alg!r}{what}: adapterkit does not support this method",
            fix=f"adapterkit edits text models with {', '.join(m.name for m in registry.methods.values())} "
                "(`adapterkit plugins` lists the installed methods); "
                + ("use EasyEdit's multimodal editor for this file" if multimodal
                   else f"install the plugin that provides it, or fix {key}"))
    easyedit.check_not_multimodal(document, alg, where, training=training)
    return registry.method_description(alg)


def numbers_from_text(document: Mapping[str, Any], schema) -> dict:
    """``document`` with number text (``1e-3``) read as a float where the schema wants a number, as EasyEdit reads it."""
    properties, _ = schema_properties(schema)

    def wants_number(key):
        kind = properties.get(key, {}).get("type")
        return kind == "number" or (isinstance(kind, list) and "number" in kind)

    return {key: float(value) if isinstance(value, str) and wants_number(key) and NUMBER_TEXT.fullmatch(value.strip())
            else value for key, value in document.items()}


def checked_hparams(document: Mapping[str, Any], registry, where: str = "<hparams>") -> tuple[dict, list[tuple[str, str, str]]]:
    """The hyperparameters as the method reads them (an EasyEdit training file's keys as adapterkit's, number
    text as numbers), and their schema problems."""
    from . import easyedit

    training = easyedit.is_training_file(document)
    if training:
        document = easyedit.from_training_file(document)
    method = hparams_method(document, registry, where, training=training)
    if method is not None and training:
        document = easyedit.without_missing_model_paths(document, where)
    if method is None and "alg_name" not in document and easyedit.TRAINING_METHOD_KEY in document:
        return dict(document), [("/alg_name", f"alg_name is missing; {easyedit.TRAINING_METHOD_KEY!r} names the method "
                                 f"only in EasyEdit's training files, which set {' or '.join(easyedit.TRAINER_FIELDS)}",
                                 f"rename {easyedit.TRAINING_METHOD_KEY} to alg_name, or add the training file's "
                                 "max_iters")]
    if method is None:
        return dict(document), [("/alg_name", "alg_name is missing", f"set alg_name to one of {sorted(registry.methods)}")]
    document = numbers_from_text(document, method.schema)
    return document, sorted(schema_problems(document, method.schema) + non_finite_problems(document))


def non_finite_problems(value, path=()) -> list[tuple[str, str, str]]:
    """NaN and inf anywhere in the document: JSON Schema's number type lets them through, and they end as NaN weights."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(json_pointer(path), f"{value} is not a finite number", "give a finite number")]
    if isinstance(value, Mapping):
        return [p for key, item in value.items() for p in non_finite_problems(item, (*path, key))]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in non_finite_problems(item, (*path, i))]
    return []


def hparams_problems(document: Mapping[str, Any], registry, where: str = "<hparams>") -> list[tuple[str, str, str]]:
    return checked_hparams(document, registry, where)[1]


def unknown_key_problems(document: Mapping[str, Any], method) -> list[tuple[str, str, str]]:
    """Keys that neither ``method`` (its schema and settings) nor EasyEdit's dataclass for it uses, each with the
    nearest known key where one is close (a misspelling)."""
    from . import easyedit

    settings_class = method.settings_class
    properties, _ = schema_properties(method.schema)
    known = ({"alg_name"} | set(properties) | set(settings_class.setting_names()) | set(settings_class.aliases)
             | set(settings_class.ignored) | easyedit.field_names(method.name))
    problems = []
    for key in document:
        if not isinstance(key, str) or key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        message = f"unknown key {key!r}: {method.name} does not read it" + (
            f", nor does EasyEdit's {method.name} file" if easyedit.field_names(method.name) else "")
        if close:
            problems.append((json_pointer([key]), f"{message}; did you mean {close[0]!r}?",
                             f"rename {key} to {close[0]}"))
        else:
            problems.append((json_pointer([key]), message,
                             "remove it (it is kept and written back, but nothing reads it), or check its spelling"))
    return problems


def load_hparams(source, registry=None, *, strict: bool = False, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read and validate hyperparameters; errors name the file, the JSON pointer and the fix.

    A file's unknown keys are warned about (``UnknownKeyWarning``); ``strict`` makes them errors. ``overrides``
    (a command's options, such as ``--stats-dir``) replace the file's values before the one check."""
    from ..arch.registry import get_registry

    registry = registry or get_registry()
    document, where = read_hparams(source)
    document = {**document, **(overrides or {})}
    document, problems = checked_hparams(document, registry, where)
    if problems:
        raise SchemaError(format_problems(where, problems))
    if not isinstance(source, Mapping):
        report_unknown_keys(document, registry.method_description(document["alg_name"]), where, strict=strict)
    return document


def report_unknown_keys(document, method, where: str, *, strict: bool) -> None:
    unknown = unknown_key_problems(document, method)
    if unknown and strict:
        raise SchemaError(format_problems(where, unknown),
                          fix="rename or remove the unknown keys (without --strict they are only warned about)")
    for pointer, message, fix in unknown:
        warnings.warn(f"{where}#{pointer}: {message} (fix: {fix})", UnknownKeyWarning, stacklevel=3)


def load_settings(source, registry=None, *, strict: bool = False, overrides: Mapping[str, Any] | None = None) -> MethodSettings:
    """The method's typed settings from a hyperparameter file or dict, built once, right after the schema check.

    Settings built here are taken as they are when given again; others (built or changed by hand) are checked
    against the schema first."""
    from ..arch.registry import get_registry

    registry = registry or get_registry()
    if isinstance(source, MethodSettings):
        method = registry.method_description(source.alg_name)
        if not isinstance(source, method.settings_class):
            raise SchemaError(f"settings of type {type(source).__name__} given for {method.name}, "
                              f"which takes {method.settings_class.__name__}",
                              fix=f"build them with {method.settings_class.__name__}.from_hparams, or pass the hparams dict")
        if _checked.get(id(source)) is not source:
            where = f"<{type(source).__name__}>"
            problems = hparams_problems(source.to_dict(), registry, where)
            if problems:
                raise SchemaError(format_problems(where, problems))
            _checked[id(source)] = source
        return source
    document = load_hparams(source, registry, strict=strict, overrides=overrides)
    settings = registry.method_description(document["alg_name"]).settings(document)
    _checked[id(settings)] = settings
    return settings


# settings that passed the schema check, by identity (settings are frozen, so they stay valid)
_checked: "weakref.WeakValueDictionary[int, MethodSettings]" = weakref.WeakValueDictionary()

