"""Schemas shipped in ``schemas/`` and error messages that point at the offending field."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import jsonschema

from .errors import SchemaError


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """Load ``schemas/<name>.schema.json`` (shipped inside the wheel as ``adapterkit_schemas``)."""
    try:
        text = resources.files("adapterkit_schemas").joinpath(f"{name}.schema.json").read_text()
    except FileNotFoundError:
        raise SchemaError(f"no schema named {name!r} ships with adapterkit") from None
    return json.loads(text)


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


def schema_problems(document, schema_name: str) -> list[tuple[str, str, str]]:
    """Every problem as (JSON pointer, message, fix), sorted by pointer."""
    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
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


def validate(document, schema_name: str, source: str) -> None:
    """Raise SchemaError naming ``source``, each JSON pointer and its fix, if ``document`` is invalid."""
    problems = schema_problems(document, schema_name)
    if problems:
        raise SchemaError(format_problems(source, problems))
