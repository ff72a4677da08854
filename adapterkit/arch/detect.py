"""detect: a local checkpoint (a directory, or a GGUF file) -> a ready, schema-valid hyperparameter dict.

config.json (or the GGUF's metadata) picks the plugin; every module template is checked against the checkpoint's
real tensor names (and shapes, where safetensors headers give them; a model built on the meta device for GGUF)
without loading weights or running its code.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..checkpoints.loading import checkpoint_path, config_source, read_config, read_tensor_index
from ..checkpoints.build import TensorIndex, meta_tensor_index
from ..errors import CheckpointError, SchemaError
from ..checkpoints.checks import check_weights_cover_model
from .registry import get_registry
from .schema import validate
from .spec import GLOBAL_ROLES, LAYER_ROLES, ArchSpec

CONTAINER_ROLES = ("layer", "attn", "mlp")


class DetectedHparams(dict):
    """The hyperparameters `detect` found (a plain dict to YAML and JSON), and where their declaration came from:
    ``declaration_source`` is "plugin" or "inferred"; ``spec`` is the declaration; ``inference`` says how each
    role was found when it was inferred (None otherwise)."""

    def __init__(self, hparams, spec: ArchSpec):
        super().__init__(hparams)
        self.spec = spec
        self.inference = spec.extras.get("inference")
        self.declaration_source = "inferred" if self.inference is not None else "plugin"


yaml.SafeDumper.add_representer(DetectedHparams, yaml.SafeDumper.represent_dict)


def detect(path, method: str = "ROME", *, layers: Sequence[int] | None = None, registry=None,
           allow_partial: bool = False, trace=None) -> DetectedHparams:
    """Hyperparameters for ``method`` on the checkpoint at ``path`` (what `adapterkit detect` writes).

    With no plugin for the model type, the declaration is inferred from the model (``.declaration_source``).
    ``layers``: edit these layers instead of those the architecture's rule picks (needed where it has none).
    ``allow_partial``: accept weights that do not cover the model.
    ``trace``: facts (a file or records), a trace.json of `adapterkit trace` or a ``tracing.TraceResult``; the
    edit layers then come from the causal trace's MLP peak instead of the depth-relative rule (tracing.py).
    """
    registry = registry or get_registry()
    path = checkpoint_path(path)
    config = read_config(path)
    spec = registry.for_config(config, source=str(config_source(path)), infer=True)
    stored = read_tensor_index(path)
    index = stored or meta_tensor_index(config, spec)
    index = TensorIndex({spec.model_tensor_name(n): s for n, s in index.shapes.items()}, index.source)
    check_checkpoint(spec, config, index, where=str(path))
    check_weights_cover_model(stored, config, spec, path, allow_partial=allow_partial)
    edit_method = registry.method_description(method)
    hparams = method_hparams(spec, config, edit_method, model_name=str(path), layers=layers)
    if trace is not None:
        from ..tracing.trace import apply_trace

        apply_trace(hparams, spec, config, path, trace)
    validate(hparams, edit_method.schema, f"hparams detected for {path}")
    return DetectedHparams(hparams, spec)


def method_hparams(spec: ArchSpec, config: Mapping[str, Any], method, model_name: str,
                   layers: Sequence[int] | None = None) -> dict:
    """The method's published defaults, then the declaration's per-architecture defaults (layer rules
    resolved at this depth), then its templates."""
    num_layers = spec.num_layers(config)
    hparams: dict[str, Any] = {"alg_name": method.name, "model_name": model_name, "architecture": spec.name}
    hparams.update(method.settings_class.published_defaults())
    for key, value in spec.method_defaults(method.name, method.layer_rules_from).items():
        if key == "layers":
            value = spec.resolve_layers(value, num_layers)
        elif key == "inner_params":
            value = spec.inner_params(value, num_layers)
        elif isinstance(value, Mapping) and {"value", "at", "by"} <= value.keys():
            value = spec.resolve_scaled(value, config)
        hparams[key] = value
    if layers is not None:
        hparams["layers"] = [int(layer) for layer in layers]
    for key, roles in method.template_keys.items():
        hparams[key] = [spec.template(r) for r in roles] if isinstance(roles, list) else spec.template(roles)
    if "v_loss_layer" in method.arch_keys:
        hparams["v_loss_layer"] = spec.v_loss_layer(config)
    _check_complete(hparams, spec, method, num_layers)
    return hparams


def _check_complete(hparams: Mapping[str, Any], spec: ArchSpec, method, num_layers: int) -> None:
    """Say what to give when the declaration has no rule for a setting the method needs (rather than writing
    hparams its schema then rejects)."""
    missing = [key for key in method.settings_class.required() if key not in hparams]
    if not missing:
        return
    block = f"defaults: {{{method.name.lower()}: ...}}"
    if "layers" in missing:
        example = max(num_layers // 2 - 1, 0)
        raise SchemaError(
            f"the {spec.name} declaration ({spec.source}) has no layer rule for {method.name}, so detect cannot "
            f"choose its layers; give `layers`",
            fix=f"give `layers` (`adapterkit detect MODEL --method {method.name} --layers {example}`, or "
                f"adapterkit.detect(..., layers=[{example}])), or add {{layers: {{at: N, of: DEPTH}}}} to the "
                f"declaration's {block}")
    raise SchemaError(
        f"the {spec.name} declaration ({spec.source}) gives no {', '.join(missing)} for {method.name}",
        fix=f"add a rule for {', '.join(missing)} to the declaration's {block}, or write "
            f"{', '.join(missing)} into the hyperparameter file yourself")


# --- checks against the checkpoint --------------------------------------------------------------
def check_checkpoint(spec: ArchSpec, config: Mapping[str, Any], index: TensorIndex, where: str) -> None:
    num_layers = spec.num_layers(config)
    names = set(index.names)
    _check_depth(spec, num_layers, names, where)
    for layer in range(num_layers):
        for role in LAYER_ROLES + CONTAINER_ROLES:
            if role == "layer" or spec.has_role(role):
                _check_module(spec, role, layer, names, where, index)
    for role in GLOBAL_ROLES:
        if role == "lm_head" and spec.weight_name(role) not in names:
            _check_missing_head(spec, config, names, where, index)
            continue
        if role == "ln_f" and spec.weight_name(role) not in names and _is_parameterless(spec, config, role):
            continue  # a norm without parameters (OLMo's LayerNorm) leaves no tensor to find
        _check_module(spec, role, None, names, where, index)
    if any(shape is not None for shape in index.shapes.values()):
        _check_shapes(spec, config, index, where)


def _check_missing_head(spec: ArchSpec, config: Mapping[str, Any], names: set[str], where: str, index: TensorIndex) -> None:
    """A checkpoint without the lm-head weight is fine when its head is tied: save_pretrained stores the shared
    tensor once, under the embedding's name."""
    if spec.lm_head_tied(config):
        return
    key = spec.declaration["config"].get("tied_lm_head", "tie_word_embeddings")
    if key is not None and spec.weight_name("embed") in names:
        said = (f"config.json sets {key}: false" if config.get(key) is not None
                else f"config.json does not set {key}, and {spec.name} heads are untied by default")
        raise CheckpointError(
            f"{where}: no lm-head weight {spec.weight_name('lm_head')!r} in {index.source or 'the checkpoint'}, "
            f"and {said}, so the head would be left randomly initialised",
            fix=f"if this checkpoint's head is tied to the embedding ({spec.weight_name('embed')}), set "
                f"\"{key}\": true in config.json; otherwise the weight files are incomplete")
    _check_module(spec, "lm_head", None, names, where, index)


def _is_parameterless(spec: ArchSpec, config: Mapping[str, Any], role: str) -> bool:
    """Whether the module ``role`` names exists in the model ``config`` builds (on the meta device) and holds no
    parameters: the only module a template may name without a tensor to match."""
    from ..checkpoints.build import meta_model

    try:
        module = meta_model(config, spec).get_submodule(spec.module_name(role, None))
    except (AttributeError, CheckpointError):  # no such module, or no model: the tensor check reports it
        return False
    return next(module.parameters(), None) is None


def _check_depth(spec: ArchSpec, num_layers: int, names: set[str], where: str) -> None:
    prefix = f"{spec.layers_path}."
    present = {int(n[len(prefix):].split(".", 1)[0]) for n in names
               if n.startswith(prefix) and n[len(prefix):].split(".", 1)[0].isdigit()}
    if present and (max(present) + 1 != num_layers):
        raise CheckpointError(
            f"{where}: config.json says {num_layers} layers ({spec.declaration['config']['num_layers']}), "
            f"the weights hold {max(present) + 1} under {spec.layers_path}",
            fix="the config and the weights come from different models: fix config.json or the weight files")


def _check_module(spec: ArchSpec, role: str, layer: int | None, names: set[str], where: str, index: TensorIndex) -> None:
    name = spec.module_name(role, layer)
    wanted = f"{name}.weight" if role not in CONTAINER_ROLES else f"{name}."
    found = wanted in names if role not in CONTAINER_ROLES else any(n.startswith(wanted) for n in names)
    if found:
        return
    close = difflib.get_close_matches(wanted.rstrip("."), list(names), n=3, cutoff=0.5)
    raise CheckpointError(
        f"{where}: template {spec.template(role)!r} (role {role}) matches no tensor: "
        f"{wanted.rstrip('.')!r} is not in {index.source or 'the checkpoint'}"
        + (f"; closest names: {', '.join(close)}" if close else ""),
        fix=f"correct modules for {role!r} in the {spec.name} declaration ({spec.source}), "
            f"or check that the checkpoint is a {spec.name} model")


def _expected_shapes(spec: ArchSpec, config) -> dict[str, tuple[int | None, int | None]]:
    hidden, inter, vocab = spec.hidden_size(config), spec.intermediate_size(config), spec.vocab_size(config)
    out_in = {
        "mlp_out": (hidden, inter),
        "mlp_in": (inter * spec.mlp_in_fused, hidden),
        "mlp_gate": (inter, hidden),
        "attn_out": (hidden, None),
    }
    expected = {role: spec.stored_shape(dims) for role, dims in out_in.items()}
    expected["embed"] = (vocab, hidden)
    return expected


def _check_shapes(spec: ArchSpec, config, index: TensorIndex, where: str) -> None:
    expected = _expected_shapes(spec, config)
    for role, dims in expected.items():
        if not spec.has_role(role):
            continue
        layer = 0 if role in LAYER_ROLES else None
        name = spec.weight_name(role, layer)
        shape = index.shapes.get(name)
        if shape is None:
            continue
        if len(shape) != 2 or any(want is not None and got != want for got, want in zip(shape, dims)):
            readable = tuple("any" if d is None else d for d in dims)
            raise CheckpointError(
                f"{where}: {name} has shape {list(shape)}, but config.json implies {list(readable)} "
                f"({spec.weight_layout} layout, hidden={spec.hidden_size(config)}, "
                f"intermediate={spec.intermediate_size(config)}, vocab={spec.vocab_size(config)})",
                fix="the config and the weights disagree: use the config.json that came with these weights")


def write_yaml(hparams: Mapping[str, Any], out: str | Path | None, comment: str | None = None) -> str:
    import yaml

    from ..files.atomic import write_text_atomic

    text = yaml.safe_dump(dict(hparams), sort_keys=False, default_flow_style=None)
    if comment:
        text = "".join(f"# {line}\n" for line in comment.splitlines()) + text
    if out is not None:
        write_text_atomic(out, text)
    return text
