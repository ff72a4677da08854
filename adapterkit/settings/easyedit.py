"""EasyEdit's hyperparameter dataclasses: which keys its files use, which files are its multimodal ones, and
writing a file its own dataclass loads unchanged.

The fields come from ``schemas/easyedit_fields.json``, extracted from EasyEdit's sources by
``benchmarks/extract_easyedit_fields.py`` (the copy it read is in tests/data/easyedit_hparams/).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from ..errors import AdapterkitError, UnsupportedMethodError

FIELDS_FILE = "easyedit_fields.json"

# EasyEdit loads any model and tokenizer class by name from transformers; the Auto classes fit every checkpoint
# adapterkit reads, and its trainer takes "automodel" as a decoder-only model
CHECKPOINT_FIELDS = {"model_class": "AutoModelForCausalLM", "tokenizer_class": "AutoTokenizer"}
# adapterkit's None that EasyEdit cannot take: the device the model is on (EasyEdit: a GPU index)
FOR_NONE = {"device": 0}
# adapterkit's None that means the same to EasyEdit: no trained editor yet
KEEP_NONE = {"archive"}
# Fields that name a local model EasyEdit loads (its reference files say ./hugging_cache/...): what to set them to
MODEL_PATHS = {
    "small_name": "a local checkpoint directory of SERAC's small counterfactual model, with the base model's "
                  "vocabulary (adapterkit reads null as a copy of the base model's first layers)",
    "cls_name": "a local checkpoint directory of SERAC's scope classifier, a BERT-style encoder such as "
                "distilbert-base-cased (EasyEdit loads it; adapterkit does not read cls_name)",
}
# AlphaEdit's null-space projection: EasyEdit computes it and saves it at P_loc when no file is there, and loads
# any file that is, so a path shared by several models would hand one model's projection to another
PROJECTION_FIELD = "P_loc"


@lru_cache(maxsize=1)
def _document() -> dict:
    return json.loads(resources.files("adapterkit_schemas").joinpath(FIELDS_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _methods_matched() -> dict[str, tuple[str, dict]]:
    """Upper-cased alg_name -> (EasyEdit's own spelling, its dataclass): files match it in any case, and
    EasyEdit's loaders compare it exactly (``AlphaEdit``)."""
    return {name.upper(): (name, info) for name, info in _document()["methods"].items()}


def dataclass_info(alg_name: str) -> dict | None:
    """EasyEdit's dataclass for a text method (class, file, fields, reference values), or None where it has none."""
    found = _methods_matched().get(alg_name.upper())
    return found[1] if found else None


def field_names(alg_name: str) -> set[str]:
    """The keys EasyEdit's own files for this method use (empty for a method EasyEdit does not have)."""
    info = dataclass_info(alg_name)
    return set(info["fields"]) if info else set()


def required_fields(info: Mapping[str, Any]) -> list[str]:
    return [name for name, entry in info["fields"].items() if "default" not in entry]


def check_not_multimodal(document: Mapping[str, Any], alg_name: str, where: str) -> None:
    """Refuse an EasyEdit multimodal file that carries a text method's alg_name (its MEND files for BLIP-2 and
    MiniGPT-4 say MEND): it holds fields only the multimodal dataclass requires."""
    text_fields = field_names(alg_name)
    for name, info in _document()["multimodal"].items():
        if name.upper() != alg_name.upper():
            continue
        marks = sorted(f for f in required_fields(info) if f not in text_fields and f in document)
        if marks:
            raise UnsupportedMethodError(
                f"{where}: an EasyEdit multimodal {alg_name.upper()} file (for {info['class']}: it sets "
                f"{', '.join(marks)}); adapterkit does not support multimodal editing",
                fix="adapterkit edits text models; use EasyEdit's multimodal editor for this file")


def multimodal_class(alg_name: str) -> str | None:
    """EasyEdit's dataclass of a multimodal-only method (SERAC_MULTI), or None."""
    info = _document()["multimodal"].get(alg_name.upper())
    return info["class"] if info and alg_name.upper() not in _methods_matched() else None


def to_easyedit(settings, checkpoint: str) -> tuple[dict, list[str], list[str]]:
    """``settings`` (built from what detect found) as EasyEdit's file for the method: exactly its dataclass's fields.

    A field takes adapterkit's value (its setting, default filled in, under EasyEdit's name), else what fits the
    checkpoint, else the dataclass's default, else the value of EasyEdit's reference file for the method. A
    reference path that does not exist here is never written as if it did: a model path becomes null, the
    projection file a path of this model's own (see MODEL_PATHS, PROJECTION_FIELD).
    Returns the file, the fields whose value came from the reference file (the caller says so: review them), and
    a note for each path written that is not there (the caller says so too)."""
    info = dataclass_info(settings.alg_name)
    if info is None:
        raise AdapterkitError(f"EasyEdit has no {settings.alg_name} hyperparameter dataclass to write for",
                              fix="write adapterkit's own format (leave out --format easyedit)")
    ours = {**{name: getattr(settings, name) for name in settings.setting_names()}, **settings.extra}
    reference = info["reference_values"]
    out: dict[str, Any] = {}
    from_reference = []
    for field, entry in info["fields"].items():
        value = ours.get(settings.aliases.get(field, field))
        if value is not None or (field in KEEP_NONE and field in ours):
            out[field] = value
        elif field in CHECKPOINT_FIELDS:
            out[field] = CHECKPOINT_FIELDS[field]
        elif field == "tokenizer_name":
            out[field] = checkpoint
        elif field in FOR_NONE:
            out[field] = FOR_NONE[field]
        elif "default" in entry:
            out[field] = entry["default"]
        else:
            out[field] = reference.get(field)
            from_reference.append(field)
    out["alg_name"] = _methods_matched()[settings.alg_name.upper()][0]
    return out, from_reference, _paths_not_here(out, from_reference, checkpoint)


def _paths_not_here(out: dict, from_reference: list[str], checkpoint: str) -> list[str]:
    """Replace reference paths that do not exist here (in ``out``); a note on each path field not there."""
    from pathlib import Path

    notes = []
    for field, what in MODEL_PATHS.items():
        value = out.get(field)
        if field in from_reference and isinstance(value, str) and not Path(value).exists():
            out[field] = None
            notes.append(f"{field}: null, as EasyEdit's reference {value!r} does not exist here; set it to {what}")
    value = out.get(PROJECTION_FIELD)
    if PROJECTION_FIELD in from_reference and isinstance(value, str):
        own = Path(str(out.get("stats_dir") or "stats")) / (Path(checkpoint).name or "model") / "null_space_project.pt"
        out[PROJECTION_FIELD] = str(own)
        notes.append(f"{PROJECTION_FIELD}: {own} is not there yet: EasyEdit computes this model's null-space projection "
                     f"and saves it there on first use (its reference {value!r} is one file for every model)")
    return notes


def path_problems(document: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Model path fields (MODEL_PATHS) that name no existing path here, as (pointer, message, fix)."""
    from pathlib import Path

    problems = []
    for field, what in MODEL_PATHS.items():
        value = document.get(field)
        if isinstance(value, str) and value and not Path(value).exists():
            problems.append((f"/{field}", f"{value!r} does not exist here (a path is read relative to the current "
                             "directory, and nothing is downloaded)",
                             f"set {field} to {what}" + ("; or null" if field == "small_name" else "")))
    return problems
