"""A checkpoint's files checked against the model before any weight is trusted: safetensors headers, the
tensors against a meta-device build of the config, and what transformers reports after loading."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..arch.config_checks import is_count
from ..errors import CheckpointError, listed
from .build import meta_model

PARTIAL_FIX = ("use the weight files that belong to this config.json (a partial copy or another model's weights "
               "are the usual causes), or pass --allow-partial-weights (allow_partial=True) to load the model anyway, "
               "with the missing tensors randomly initialised")


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
        if not isinstance(shape, list) or not all(is_count(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers", fix=fix)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_count(o) for o in offsets)
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
