"""config.json's values checked before a model is built: the keys that pick a plugin have the types transformers
writes, and the counts a declaration reads (depth, widths, positions) are positive integers."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import CheckpointError

MAX_LAYERS = 4096  # far above any published model; a larger depth is a corrupt config that would take hours to build


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config_types(config: Mapping[str, Any], path) -> None:
    """The keys that pick a plugin have the types transformers writes."""
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise CheckpointError(f"{path}: model_type is {model_type!r}, not a string",
                              fix="write model_type as the string save_pretrained writes (the model family's name)")
    architectures = config.get("architectures")
    if architectures is not None and not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        raise CheckpointError(f"{path}: architectures is {architectures!r}, not a list of class names",
                              fix="write architectures as a list of model class names, as save_pretrained does")


# the declaration's config entries that name counts (others, like tied_lm_head, name flags)
COUNT_SETTINGS = ("num_layers", "hidden_size", "intermediate_size", "vocab_size", "max_positions")


def check_config_values(config: Mapping[str, Any], spec, source) -> None:
    """Every depth and width the declaration reads from ``config`` is a positive integer where present."""
    rules = {}
    for what, rule in spec.declaration.get("config", {}).items():
        if what not in COUNT_SETTINGS or rule is None:
            continue
        rules[what] = [rule] if isinstance(rule, str) else rule if isinstance(rule, list) else rule.get("keys", [])
    check_config_counts(config, rules, source, f"the {spec.name} plugin")


def check_config_counts(config: Mapping[str, Any], rules: Mapping[str, Sequence[str]], source, reader: str) -> None:
    """Each config key in ``rules`` (setting -> keys ``reader`` reads it from) is a positive integer where present."""
    for what, keys in rules.items():
        for key in keys:
            value = config.get(key)
            if value is not None and not (is_count(value) and value > 0):
                raise CheckpointError(
                    f"{source}: {key} is {value!r} ({type(value).__name__}); {reader} reads {what} "
                    f"from it and needs a positive integer", fix=f"write {key} as a positive integer, e.g. \"{key}\": 12")
            if what == "num_layers" and value is not None and value > MAX_LAYERS:
                raise CheckpointError(f"{source}: {key} is {value}, more layers than adapterkit builds ({MAX_LAYERS})",
                                      fix=f"write the model's real depth in {key}")
