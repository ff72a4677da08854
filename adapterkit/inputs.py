"""Inputs checked before any work starts: config.json, safetensors headers, the checkpoint's weights against
the model, hyperparameters against the loaded model, requests against the tokenizer and the model's positions,
and the output location. Each failure is an ``AdapterkitError`` naming the file, the field and the fix.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import CheckpointError, OutputError, RequestError, SchemaError

SHOWN = 5  # names listed in a message before "and N more"
MAX_LAYERS = 4096  # far above any published model; a larger depth is a corrupt config that would take hours to build
PARTIAL_FIX = ("use the weight files that belong to this config.json (a partial copy or another model's weights "
               "are the usual causes), or pass --allow-partial-weights (allow_partial=True) to load the model anyway, "
               "with the missing tensors randomly initialised")


def listed(names: Iterable[str], shown: int = SHOWN) -> str:
    names = sorted(names)
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more ({len(names)} in all)" if len(names) > shown else "")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- config.json --------------------------------------------------------------------------------
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
            if value is not None and not (_is_count(value) and value > 0):
                raise CheckpointError(
                    f"{source}: {key} is {value!r} ({type(value).__name__}); {reader} reads {what} "
                    f"from it and needs a positive integer", fix=f"write {key} as a positive integer, e.g. \"{key}\": 12")
            if what == "num_layers" and value is not None and value > MAX_LAYERS:
                raise CheckpointError(f"{source}: {key} is {value}, more layers than adapterkit builds ({MAX_LAYERS})",
                                      fix=f"write the model's real depth in {key}")


# --- safetensors headers ------------------------------------------------------------------------
def check_safetensors_header(header, file, data_bytes: int, dtype_bytes: Mapping[str, int]) -> dict:
    """A header's entries, each with a dtype, a shape of counts and offsets inside the file's data (and, for the
    dtypes in ``dtype_bytes``, as many bytes as the shape needs)."""
    fix = "re-download or re-save the file; a partial copy is the usual cause"
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: the safetensors header is a JSON {type(header).__name__}, not an object", fix=fix)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise CheckpointError(f"{file}: the header's __metadata__ is not an object", fix=fix)
    for name, entry in header.items():
        where = f"{file}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: header entry is {type(entry).__name__}, not an object", fix=fix)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise CheckpointError(f"{where}: dtype {dtype!r} is not a string such as \"F32\"", fix=fix)
        if not isinstance(shape, list) or not all(_is_count(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers", fix=fix)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{where}: data_offsets {offsets!r} is not [begin, end]", fix=fix)
        if offsets[1] > data_bytes:
            raise CheckpointError(f"{where}: its data ends at byte {offsets[1]}, but the file holds {data_bytes} "
                                  f"bytes of data (truncated?)", fix=fix)
        elements = 1
        for d in shape:
            elements *= d
        if dtype in dtype_bytes and elements * dtype_bytes[dtype] != offsets[1] - offsets[0]:
            raise CheckpointError(f"{where}: shape {shape} of {dtype} needs {elements * dtype_bytes[dtype]} bytes, "
                                  f"its data_offsets give {offsets[1] - offsets[0]}", fix=fix)
    return header


# --- the checkpoint's weights against the model -------------------------------------------------
@dataclass
class Coverage:
    """How a checkpoint's tensors differ from the model its config builds."""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "name: checkpoint [a, b], model [c, d]"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} tensor(s) of the model are missing from the weights: {listed(self.missing)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} tensor(s) have another shape: {listed(self.mismatched, 3)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} tensor(s) in the weights are not in the model: {listed(self.unexpected)}")
        return "; ".join(parts)


def weight_coverage(index, config: Mapping[str, Any], spec, source: str = "config.json") -> Coverage:
    """Compare a checkpoint's tensor index with a meta-device build of the model (no weights read).

    Tied aliases (an lm-head tied to the embedding), the declaration's ``checkpoint_prefixes``, weights saved
    without the base model's prefix and the model class's own ignore lists are honoured as transformers
    honours them on load.
    """
    from .checkpoint import meta_model

    model = meta_model(config, spec, source)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    own = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    aliases = set(expected) - own  # names of parameters shared with another (tied weights)
    ignore_missing = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or ()]
    ignore_unexpected = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()]
    stored = _as_loaded({spec.model_tensor_name(name): shape for name, shape in index.shapes.items()}, model)
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    if prefix != "." and not any(n.startswith(prefix) for n in stored):
        # saved from the base model (as some original releases are): transformers adds the prefix on load
        stored = {prefix + n if prefix + n in expected or n not in expected else n: s for n, s in stored.items()}
    coverage = Coverage()
    for name, shape in expected.items():
        if name not in stored:
            if name not in aliases and not any(p.search(name) for p in ignore_missing):
                coverage.missing.append(name)
        elif stored[name] is not None and tuple(stored[name]) != shape:
            coverage.mismatched.append(f"{name}: checkpoint {list(stored[name])}, model {list(shape)}")
    coverage.unexpected = [n for n in stored if n not in expected and not any(p.search(n) for p in ignore_unexpected)]
    return coverage


def _as_loaded(stored: Mapping[str, Any], model) -> dict[str, Any]:
    """Stored tensor names as transformers renames them on load (its conversion mapping for the model class:
    renamed keys, and per-expert tensors that it merges into one, whose shape then is not the stored one)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(model)
    except Exception:  # a transformers without conversion mappings loads names as stored
        return dict(stored)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    if not (renamings or converters):
        return dict(stored)
    loaded: dict[str, Any] = {}
    for name, shape in stored.items():
        renamed, converted = rename_source_key(name, renamings, converters)
        loaded[renamed] = None if converted is not None else shape
    return loaded


def check_weights_cover_model(index, config: Mapping[str, Any], spec, where, *, allow_partial: bool = False) -> None:
    """Refuse weights that do not cover the model (``index`` None: no header or index to compare, nothing checked)."""
    if index is None or allow_partial:
        return
    coverage = weight_coverage(index, config, spec, f"{Path(where) / 'config.json'}")
    if coverage:
        raise CheckpointError(f"{where}: the weights ({index.source}) do not fit the {spec.name} model its "
                              f"config.json builds: {coverage.describe()}", fix=PARTIAL_FIX)


def check_loading_info(info: Mapping[str, Any], path, *, allow_partial: bool = False) -> None:
    """What transformers reported while loading (``output_loading_info=True``): refuse anything not loaded."""
    if allow_partial:
        return
    coverage = Coverage(
        missing=sorted(info.get("missing_keys") or ()),
        unexpected=sorted(info.get("unexpected_keys") or ()),
        mismatched=sorted(f"{m[0]}: checkpoint {list(m[1])}, model {list(m[2])}" if isinstance(m, tuple) and len(m) == 3
                          else str(m) for m in info.get("mismatched_keys") or ()))
    if coverage:
        raise CheckpointError(f"{path}: loading left the model partly uninitialised: {coverage.describe()}", fix=PARTIAL_FIX)


# --- hyperparameters against the loaded model ---------------------------------------------------
def module_keys(hparams: Mapping[str, Any]) -> dict[str, list[str]]:
    """EasyEdit's module keys: ``*_tmp`` / ``*_tmps`` templates and ``*_module`` names, each as a list."""
    keys = {}
    for key, value in hparams.items():
        if key.endswith(("_tmp", "_tmps", "_module")) and value is not None:
            keys[key] = list(value) if isinstance(value, (list, tuple)) else [value]
    return keys


def check_hparams_against_model(hparams: Mapping[str, Any], model, spec, where: str) -> None:
    """Every layer, module template and inner parameter of ``hparams`` exists in ``model``."""
    num_layers = spec.num_layers(model.config)
    layers = hparams.get("layers") or []
    outside = [layer for layer in layers if not (_is_count(layer) and 0 <= layer < num_layers)]
    if outside:
        raise SchemaError(f"{where}#/layers: layers {outside} do not fit a model of {num_layers} layers",
                          fix=f"use layers 0..{num_layers - 1} (`adapterkit detect MODEL` writes fitting ones)")
    modules = dict(model.named_modules())
    detect_hint = "these hparams were written for another architecture? `adapterkit detect MODEL` writes this model's"
    for key, values in module_keys(hparams).items():
        for j, template in enumerate(values):
            pointer = f"{where}#/{key}" + (f"/{j}" if isinstance(hparams[key], (list, tuple)) else "")
            if not isinstance(template, str):
                raise SchemaError(f"{pointer}: {template!r} is not a module name", fix="write module names as strings")
            names = [template.replace("{}", str(layer)) for layer in (layers or [0])] if "{}" in template else [template]
            absent = [name for name in names if name not in modules]
            if absent:
                raise SchemaError(f"{pointer}: the model has no module {absent[0]!r} ({type(model).__name__})",
                                  fix=f"{detect_hint} ({key}: {_role_hint(spec, key)})")
    parameters = {name for name, _ in model.named_parameters()}
    for j, name in enumerate(hparams.get("inner_params") or []):
        if name not in parameters:
            raise SchemaError(f"{where}#/inner_params/{j}: the model has no parameter {name!r}",
                              fix="name weights as in model.named_parameters(); `adapterkit detect MODEL --method MEND` writes them")


def _role_hint(spec, key: str) -> str:
    """The template this model's declaration gives for a key's role, where the key names one."""
    roles = {"layer_module_tmp": "layer", "mlp_module_tmp": "mlp", "attn_module_tmp": "attn",
             "ln_f_module": "ln_f", "lm_head_module": "lm_head"}
    role = roles.get(key)
    if role is None or not spec.has_role(role):
        return f"see the {spec.name} declaration ({spec.source})"
    return f"{spec.name} uses {spec.template(role)!r}"


# --- requests against the tokenizer and the model's positions -----------------------------------
def context_reserve(tok, hparams: Mapping[str, Any] | None) -> int:
    """Tokens a context template may put before a prompt: the longest fixed template, or the longest sampled
    length of ``context_template_length_params`` plus its separator ('. ')."""
    if not hparams:
        return 0
    fixed = hparams.get("context_templates")
    if isinstance(fixed, (list, tuple)) and fixed:
        return max(len(tok(str(t).replace("{}", ""))["input_ids"]) for t in fixed)
    params = hparams.get("context_template_length_params") or ()
    lengths = [p[0] for p in params if isinstance(p, (list, tuple)) and p and _is_count(p[0])]
    return max(lengths) + len(tok(". ")["input_ids"]) if lengths else 0


def check_requests_fit(requests: Sequence, tok, model, spec, hparams: Mapping[str, Any] | None = None,
                       source: str = "request") -> None:
    """Refuse, before any forward pass, a request whose texts do not fit the model's positions.

    The rule: each text a method or metric feeds the model (prompt + target_new, every rephrase prompt +
    target_new, every locality and portability prompt + its answer), after the longest context template, fits within the
    model's ``config.max_positions`` tokens. A model whose declaration names no such key is not checked.
    """
    if tok is not None:
        check_requests_tokenise(requests, tok, source)
    limit = spec.max_positions(model.config)
    if limit is None or tok is None:
        return
    reserve = context_reserve(tok, hparams)
    room = limit - reserve
    for i, request in enumerate(requests):
        texts = [("prompt + target_new", request.prompt + request.target_new)]
        texts += [(f"rephrase_prompt[{k}] + target_new", p + request.target_new) for k, p in enumerate(request.rephrase_prompts)]
        answers = request.locality_ground_truths or (request.target_new,) * len(request.locality_prompts)
        texts += [(f"locality_prompt[{k}] + its answer", p + a) for k, (p, a) in enumerate(zip(request.locality_prompts, answers))]
        texts += [(f"{kind}/{group.name}/{k} prompt + its answer", probe.prompt + probe.answer)
                  for kind, groups in (("portability", request.portability), ("locality", request.locality_groups))
                  for group in groups for k, probe in enumerate(group.probes)]
        lengths = [len(ids) for ids in tok([t for _, t in texts])["input_ids"]]
        for (what, _), n in zip(texts, lengths):
            if n > room:
                context = f" after {reserve} tokens of context template" if reserve else ""
                raise RequestError(
                    f"{request.origin or f'{source} #{i}'} ({request.case_id or request.subject!r}): {what} is {n} tokens; "
                    f"the model takes {limit} positions ({spec.name}'s config.max_positions){context}, so at most {room} fit",
                    fix=f"shorten the prompt to fit {room} tokens"
                        + (", or use shorter context templates (context_template_length_params)" if reserve else ""))


def check_requests_tokenise(requests: Sequence, tok, source: str = "request") -> None:
    """Refuse a text that gives no tokens of its own (characters the tokenizer's normaliser drops): the model would
    be fed an empty sequence, or the edit and its metrics would silently measure nothing."""
    for i, request in enumerate(requests):
        texts = [("prompt", request.prompt), ("subject", request.subject), ("target_new", request.target_new)]
        texts += [("ground_truth", request.ground_truth)] if request.ground_truth else []
        texts += [(f"rephrase_prompt[{k}]", p) for k, p in enumerate(request.rephrase_prompts)]
        texts += [(f"locality_prompt[{k}]", p) for k, p in enumerate(request.locality_prompts)]
        texts += [(f"locality_ground_truth[{k}]", a) for k, a in enumerate(request.locality_ground_truths)]
        texts += [(f"{kind}/{group.name}/{k}/{part}", text)
                  for kind, groups in (("portability", request.portability), ("locality", request.locality_groups))
                  for group in groups for k, probe in enumerate(group.probes)
                  for part, text in (("prompt", probe.prompt), ("ground_truth", probe.answer))]
        encoded = tok([t for _, t in texts], add_special_tokens=False)["input_ids"]
        for (what, text), ids in zip(texts, encoded):
            if not ids:
                raise RequestError(
                    f"{request.origin or f'{source} #{i}'}: {what} {text!r} gives no tokens with the model's tokenizer "
                    f"({type(tok).__name__}{f' from {tok.name_or_path}' if getattr(tok, 'name_or_path', '') else ''}), "
                    "which drops every character of it",
                    fix=f"write {what.split('[')[0]} with characters the tokenizer keeps (control or formatting "
                        "characters are dropped by many tokenizers), or delete the record")


# --- the output location ------------------------------------------------------------------------
def check_writable(out, *, what: str, directory: bool, overwrite: bool = True) -> None:
    """Refuse, before any work, an output that cannot be written: create and remove a probe file where it goes."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise OutputError(f"{out} already exists", fix="choose another --out, or pass --overwrite")
        if out.is_dir() != directory:
            kind = "a directory" if out.is_dir() else "a file"
            raise OutputError(f"{out} is {kind}, and the {what} is written as {'a directory' if directory else 'a file'}",
                              fix="choose another --out")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{out}: {ancestor} is not a directory, so the {what} cannot be written there",
                          fix="choose an --out inside a writable directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".adapterkit-probe.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in {ancestor} ({exc.strerror or exc})",
                          fix="choose an --out inside a writable directory, or fix its permissions") from None


# --- statistics the edit will read --------------------------------------------------------------
def check_stats_inputs(model, spec, settings) -> None:
    """Statistics files the settings point at, and the corpus they name, are readable (cheaply: a zip's
    directory and a corpus's first document), so a damaged one stops the edit before it starts."""
    import zipfile

    from .editing import stats
    from .errors import StatsError
    from .methods.settings import LocateThenEditSettings

    if not isinstance(settings, LocateThenEditSettings):
        return
    for wanted in stats.stats_requests(model, spec, settings, settings.stats_dir, corpus=settings.mom2_corpus):
        if settings.mom2_corpus is None:
            wanted = stats.locate(wanted, settings) or wanted
        if not wanted.path.exists():
            continue
        try:
            with zipfile.ZipFile(wanted.path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise StatsError(f"{wanted.path}: cannot read statistics ({type(exc).__name__}: {exc})",
                             fix="delete the file and compute it again") from None
        if not {"mom2.mom2.npy", "mom2.count.npy"} <= names:
            raise StatsError(f"{wanted.path}: not a second-moment statistics file (no mom2.mom2 / mom2.count)",
                             fix="point at a file written by `adapterkit stats`, ROME or EasyEdit's layer_stats")
    if settings.mom2_corpus is not None:
        next(iter(stats.read_corpus(settings.mom2_corpus)), None)
