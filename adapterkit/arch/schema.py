"""Schemas (shipped in ``schemas/`` or by a method's own package) and error messages that point at the offending field.

Method schemas share parts through ``$ref``: ``locate_then_edit.schema.json`` and ``trained_editor.schema.json``
hold what the families share, and a plugin's own schema may refer to them by their ``$id``.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Union

import jsonschema
from referencing import Registry, Resource

from ..errors import SchemaError

# A schema is given as the name of one shipped in schemas/ ("rome"), as a file (a path, or an
# importlib.resources file of a plugin's package, anything with read_text), or as the schema itself.
SchemaSource = Union[str, os.PathLike, Mapping[str, Any]]

SHIPPED = "adapterkit_schemas"
SUFFIX = ".schema.json"


@lru_cache(maxsize=None)
def shipped_schema(name: str) -> dict:
    """``schemas/<name>.schema.json`` (shipped inside the wheel as ``adapterkit_schemas``)."""
    try:
        text = resources.files(SHIPPED).joinpath(f"{name}{SUFFIX}").read_text()
    except FileNotFoundError:
        raise SchemaError(f"no schema named {name!r} ships with adapterkit") from None
    return json.loads(text)


@lru_cache(maxsize=None)
def _schema_file(location: str) -> dict:
    try:
        return json.loads(_read(location))
    except OSError as exc:
        raise SchemaError(f"{location}: cannot read the schema ({exc.strerror or exc})",
                          fix="ship the schema file inside the method's package and point `schema` at it") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{location}: the schema is not valid JSON: {exc}") from None


def _read(location: str) -> str:
    with open(location, encoding="utf-8") as handle:
        return handle.read()


def load_schema(source: SchemaSource) -> dict:
    """The schema ``source`` names: a shipped name, a file, or the schema dict itself."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, str) and not source.endswith(".json"):
        return shipped_schema(source)
    if hasattr(source, "read_text") and not isinstance(source, os.PathLike):  # a resources file inside a zip
        try:
            return json.loads(source.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SchemaError(f"{source}: cannot read the schema ({exc})") from None
    return _schema_file(os.fspath(source))


@lru_cache(maxsize=None)
def _references() -> Registry:
    """Every shipped schema under its ``$id``, so ``$ref`` between them (and from plugins' schemas) resolves."""
    documents = []
    for entry in resources.files(SHIPPED).iterdir():
        if entry.name.endswith(SUFFIX):
            document = json.loads(entry.read_text())
            if "$id" in document:
                documents.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(documents)


def schema_properties(schema: SchemaSource) -> tuple[dict[str, dict], list[str]]:
    """The properties and required keys of a schema, those it takes through ``$ref`` included, each property's
    own ``$ref`` resolved: what a hyperparameter file may and must hold."""
    document = load_schema(schema)
    properties: dict[str, dict] = {}
    required: list[str] = []

    def resolved(node, resolver):
        while isinstance(node, dict) and "$ref" in node and len(node) == 1:
            found = resolver.lookup(node["$ref"])
            node, resolver = found.contents, found.resolver
        return node, resolver

    def collect(node, resolver):
        if "$ref" in node:
            found = resolver.lookup(node["$ref"])
            collect(found.contents, found.resolver)
        for key, value in node.get("properties", {}).items():
            value, inner = resolved(value, resolver)
            if isinstance(value, dict) and value.get("type") == "array" and isinstance(value.get("items"), dict):
                value = {**value, "items": resolved(value["items"], inner)[0]}
            properties[key] = value
        required.extend(k for k in node.get("required", []) if k not in required)

    collect(document, _references().resolver(base_uri=document.get("$id", "")))
    return properties, required


def json_pointer(path) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else "/"


def _fix_for(error: jsonschema.ValidationError) -> str:
    hint = error.schema.get("x-fix") if isinstance(error.schema, dict) else None
    if hint:
        return hint
    if error.validator == "required":
        return f"add the missing key ({error.message.split(' ')[0]})"
    if error.validator == "additionalProperties":
        return "remove or rename the key (check its spelling against the schema)"
    if error.validator == "enum":
        return f"use one of {error.validator_value}"
    if error.validator == "type":
        return f"give a value of type {error.validator_value}"
    if error.validator == "pattern":
        return f"match the pattern {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"use a value within the {error.validator} {error.validator_value}"
    if error.validator == "minItems":
        return f"give at least {error.validator_value} item(s)"
    return "see the schema for what this field accepts"


def schema_problems(document, schema: SchemaSource) -> list[tuple[str, str, str]]:
    """Every problem as (JSON pointer into ``document``, message, fix), sorted by pointer.

    Errors found through a ``$ref`` are reported at the document's key, as any other."""
    validator = jsonschema.Draft202012Validator(load_schema(schema), registry=_references())
    problems = []
    for error in validator.iter_errors(document):
        pointer = json_pointer(error.absolute_path)
        problems.append((pointer, error.message, _fix_for(error)))
    return sorted(problems)


def format_problems(source: str, problems) -> str:
    lines = [f"{source}: {len(problems)} problem(s)"]
    for pointer, message, fix in problems:
        lines.append(f"  {source}#{pointer}: {message}\n    fix: {fix}")
    return "\n".join(lines)


def validate(document, schema: SchemaSource, source: str) -> None:
    """Raise SchemaError naming ``source``, each JSON pointer and its fix, if ``document`` is invalid."""
    problems = schema_problems(document, schema)
    if problems:
        raise SchemaError(format_problems(source, problems))
