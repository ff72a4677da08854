"""Family declarations: one YAML covering several model types whose modules are the same.

A declaration with ``variants`` stands for one architecture per variant: the family's fields, overridden by
what the variant says differs (its match, norm, tied head, gated MLP, config keys, module paths, tiny
config, defaults). Everything downstream sees ordinary single-architecture declarations.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

# how many levels of a variant's nested field merge into the family's: config and tiny_config keys; modules and
# the roles of modules.layer; defaults per method and per setting (a setting such as a layer rule is replaced whole)
MERGE_DEPTH = {"config": 1, "tiny_config": 1, "modules": 2, "defaults": 2}


def expand(declaration: Mapping[str, Any]) -> list[tuple[dict, str]]:
    """[(declaration, JSON pointer of its variant or '')]: the declaration itself when it has no variants."""
    variants = declaration.get("variants")
    if not variants:
        return [(dict(declaration), "")]
    family = {k: v for k, v in declaration.items() if k != "variants"}
    return [(variant_declaration(family, name, variant), f"/variants/{name}") for name, variant in variants.items()]


def variant_declaration(family: Mapping[str, Any], name: str, variant: Mapping[str, Any]) -> dict:
    merged = copy.deepcopy(dict(family))
    merged["name"] = name
    for key, value in variant.items():
        if key == "gated_mlp":
            continue
        if key in MERGE_DEPTH and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, MERGE_DEPTH[key])
        else:
            merged[key] = copy.deepcopy(value)
    if variant.get("gated_mlp") is False:
        merged["modules"]["layer"].pop("mlp_gate", None)
    return merged


def _merge(base: dict, override: Mapping[str, Any], depth: int) -> dict:
    out = dict(base)
    for key, value in override.items():
        nested = depth > 1 and isinstance(out.get(key), dict) and isinstance(value, Mapping)
        out[key] = _merge(out[key], value, depth - 1) if nested else copy.deepcopy(value)
    return out
