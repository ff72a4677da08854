"""ArchSpec: one validated architecture declaration and the accessors the editing core uses.

The core never names an architecture; it asks an ArchSpec for module paths by role, the weight
layout, the norm type and the config's depth and widths.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import CheckpointError, AdapterkitError

LAYER_ROLES = ("attn", "attn_out", "mlp", "mlp_in", "mlp_gate", "mlp_out")
GLOBAL_ROLES = ("embed", "ln_f", "lm_head")
WEIGHT_ROLES = ("attn_out", "mlp_in", "mlp_gate", "mlp_out", "embed", "lm_head")
# what a method that takes another's rules (PMET: MEMIT's) reads from it: the choices that depend on the model's shape
SHAPE_RULE_KEYS = ("layers", "inner_params", "mom2_update_weight")


@dataclass(frozen=True)
class ArchSpec:
    declaration: Mapping[str, Any]
    source: str = "<dict>"
    distribution: str = "?"
    version: str = "?"
    plugin: str = "?"
    extras: dict = field(default_factory=dict, compare=False)

    # --- identity -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.declaration["name"]

    @property
    def priority(self) -> int:
        return int(self.declaration.get("priority", 0))

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(self.declaration["match"].get("model_types", ()))

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(self.declaration["match"].get("architectures", ()))

    def matches(self, config: Mapping[str, Any]) -> bool:
        if config.get("model_type") in self.model_types:
            return True
        return any(a in self.architectures for a in config.get("architectures") or ())

    # --- layout facts -------------------------------------------------------------------------
    @property
    def weight_layout(self) -> str:
        """'linear' ([out, in]) or 'conv1d' ([in, out])."""
        return self.declaration["weight_layout"]

    @property
    def _stores_in_out(self) -> bool:
        return self.weight_layout == "conv1d"

    def out_in_shape(self, stored_shape) -> tuple:
        """(out, in) of a 2-D weight stored with ``stored_shape`` in the declared layout."""
        first, second = stored_shape
        return (second, first) if self._stores_in_out else (first, second)

    def stored_shape(self, out_in) -> tuple:
        """The shape a weight of (out, in) has in the declared layout (a dimension may be None: any)."""
        out, in_ = out_in
        return (in_, out) if self._stores_in_out else (out, in_)

    def as_stored(self, out_in):
        """An [out, in] weight or update in the declared layout, ready to add to the stored weight."""
        return out_in.T if self._stores_in_out else out_in

    @property
    def norm(self) -> str:
        return self.declaration["norm"]

    @property
    def tied_lm_head(self) -> bool:
        """The family default: whether the lm-head shares the embedding's tensor when a config does not say."""
        return bool(self.declaration["tied_lm_head"])

    def lm_head_tied(self, config: Mapping[str, Any] | Any) -> bool:
        """Whether this checkpoint's lm-head is the embedding's tensor: its config's flag, else the family default.

        One model class serves tied and untied checkpoints of a family (the small releases of several families
        tie, their larger siblings do not), so the declaration alone cannot decide it.
        """
        key = self.declaration["config"].get("tied_lm_head", "tie_word_embeddings")
        if key is None:  # the family's model class never reads a flag: the declaration holds for every checkpoint
            return self.tied_lm_head
        value = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
        return self.tied_lm_head if value is None else bool(value)

    def lm_head_shares_embedding(self, model) -> bool:
        """Whether the loaded ``model``'s lm-head weight is the embedding weight (one tensor, two names)."""
        return self.module(model, "lm_head").weight is self.module(model, "embed").weight

    def model_tensor_name(self, checkpoint_name: str) -> str:
        """The name a checkpoint tensor has once loaded (declared checkpoint_prefixes undone)."""
        for model_prefix, stored_prefix in self.declaration.get("checkpoint_prefixes", {}).items():
            if checkpoint_name == stored_prefix or checkpoint_name.startswith(stored_prefix + "."):
                return model_prefix + checkpoint_name[len(stored_prefix):]
        return checkpoint_name

    @property
    def mlp_in_fused(self) -> int:
        return int(self.declaration.get("mlp_in_fused", 1))

    @property
    def tiny_config(self) -> dict | None:
        tiny = self.declaration.get("tiny_config")
        return dict(tiny) if tiny is not None else None

    # --- module paths -------------------------------------------------------------------------
    @property
    def layers_path(self) -> str:
        return self.declaration["modules"]["layers"]

    def has_role(self, role: str) -> bool:
        modules = self.declaration["modules"]
        return role in modules or role == "layer" or role in modules["layer"]

    def template(self, role: str) -> str:
        """EasyEdit-style template: '{}' stands for the layer index in per-layer roles."""
        modules = self.declaration["modules"]
        if role == "layer":
            return f"{self.layers_path}.{{}}"
        if role in GLOBAL_ROLES:
            return modules[role]
        if role in modules["layer"]:
            return f"{self.layers_path}.{{}}.{modules['layer'][role]}"
        raise AdapterkitError(f"architecture {self.name!r} declares no module for role {role!r}",
                              fix=f"add modules.layer.{role} to the {self.name} declaration ({self.source})")

    def module_name(self, role: str, layer: int | None = None) -> str:
        template = self.template(role)
        if "{}" in template:
            if layer is None:
                raise AdapterkitError(f"role {role!r} is per layer: a layer index is needed")
            return template.format(layer)
        return template

    def module(self, model, role: str, layer: int | None = None):
        return get_module(model, self.module_name(role, layer))

    def weight_name(self, role: str, layer: int | None = None) -> str:
        return f"{self.module_name(role, layer)}.weight"

    # --- config -------------------------------------------------------------------------------
    def config_value(self, config: Mapping[str, Any] | Any, what: str) -> int:
        """Depth or a width from a config dict or a transformers config object."""
        rule = self.declaration["config"][what]
        getter = config.get if isinstance(config, Mapping) else (lambda k: getattr(config, k, None))
        keys, times_hidden = _config_rule(rule)
        for key in keys:
            value = getter(key)
            if value is not None:
                return int(value)
        if times_hidden is not None:
            return int(times_hidden * self.config_value(config, "hidden_size"))
        raise CheckpointError(
            f"config has none of {list(keys)} (the {self.name} plugin reads {what} from there)",
            fix=f"add {keys[0]} to config.json, or fix config.{what} in the {self.name} declaration ({self.source})")

    def num_layers(self, config) -> int:
        return self.config_value(config, "num_layers")

    def hidden_size(self, config) -> int:
        return self.config_value(config, "hidden_size")

    def intermediate_size(self, config) -> int:
        return self.config_value(config, "intermediate_size")

    def vocab_size(self, config) -> int:
        return self.config_value(config, "vocab_size")

    def max_positions(self, config) -> int | None:
        """The longest sequence the model takes (``config.max_positions``); None when undeclared or absent."""
        rule = self.declaration["config"].get("max_positions")
        if rule is None:
            return None
        getter = config.get if isinstance(config, Mapping) else (lambda k: getattr(config, k, None))
        for key in _config_rule(rule)[0]:
            value = getter(key)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def v_loss_layer(self, config) -> int:
        rule = int(self.declaration.get("v_loss_layer", -1))
        return rule % self.num_layers(config) if rule < 0 else rule

    # --- method defaults ----------------------------------------------------------------------
    def method_defaults(self, method: str, layer_rules_from: str | None = None) -> dict:
        """The declaration's defaults for ``method``; with ``layer_rules_from``, the layer rules of that other
        method where ``method`` has none of its own (PMET edits MEMIT's layers)."""
        blocks = self.declaration.get("defaults", {})
        own = dict(blocks.get(method.lower(), {}))
        donor = blocks.get(layer_rules_from.lower(), {}) if layer_rules_from else {}
        taken = {key: donor[key] for key in SHAPE_RULE_KEYS if key in donor and key not in own}
        return {**taken, **own}

    def resolve_scaled(self, rule: Mapping[str, Any], config) -> float:
        """A setting published at a reference width, at this model's width (4 significant digits)."""
        width = self.config_value(config, rule["by"])
        value = float(rule["value"]) * (width / float(rule["at"])) ** float(rule.get("power", 1))
        return float(f"{value:.4g}")

    def resolve_layers(self, rule: Mapping[str, int], num_layers: int) -> list[int]:
        return resolve_layer_rule(rule, num_layers)

    def inner_params(self, rule: Mapping[str, Any], num_layers: int) -> list[str]:
        layers = resolve_layer_rule(rule["layers"], num_layers)
        return [self.weight_name(role, layer) for layer in layers for role in rule["roles"]
                if self.has_role(role)]

    # --- native classes -----------------------------------------------------------------------
    def model_class(self):
        return _import_object(self.declaration.get("model_class"), self)

    def config_class(self):
        return _import_object(self.declaration.get("config_class"), self)


def _config_rule(rule) -> tuple[tuple[str, ...], float | None]:
    if isinstance(rule, str):
        return (rule,), None
    if isinstance(rule, list):
        return tuple(rule), None
    return tuple(rule["keys"]), rule.get("default_times_hidden")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def resolve_layer_rule(rule: Mapping[str, int], num_layers: int) -> list[int]:
    """Rescale a layer choice made at a reference depth (``of``) to ``num_layers``."""
    clamp = lambda i: min(max(i, 0), num_layers - 1)  # noqa: E731
    if "last" in rule:
        return list(range(max(num_layers - rule["last"], 0), num_layers))
    scale = num_layers / rule["of"]
    if "at" in rule:
        return [clamp(_round_half_up(rule["at"] * scale))]
    start, stop = clamp(_round_half_up(rule["from"] * scale)), clamp(_round_half_up(rule["to"] * scale))
    return list(range(start, stop + 1))


def get_module(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        parent = name.rsplit(".", 1)[0]
        raise AdapterkitError(
            f"the model has no module {name!r}",
            fix=f"check the template against the model's modules (e.g. list(dict(model.named_modules()))"
                f" near {parent!r}), or the hparams file's *_module_tmp keys") from None


def _import_object(path: str | None, spec: ArchSpec):
    if not path:
        return None
    module_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AdapterkitError(f"plugin {spec.name!r} names {path!r}, which cannot be imported: {exc}",
                              fix=f"install the plugin's distribution ({spec.distribution}) fully, or fix the path in {spec.source}") from None
