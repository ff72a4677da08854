"""EasyEdit's hyperparameter dataclasses: which keys its files use, which files are its multimodal ones, and
writing a file its own dataclass loads unchanged.

EasyEdit's trainer reads MEND's and SERAC's files of ``hparams/TRAINING/`` with training dataclasses of their own
(``MENDTrainingHparams``, ``SERACTrainingHparams``), which name the method ``alg`` rather than ``alg_name``;
adapterkit reads those files as the method's settings, and writes them too (``to_easyedit(..., training=True)``).

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
# adapterkit's None that EasyEdit cannot take: the device the model is on (EasyEdit: a GPU index; its training
# dataclasses annotate device as str and their files say cuda:0)
FOR_NONE = {"device": 0}
FOR_NONE_TEXT = {"device": "cuda:0"}
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
# The key a training file names its method with, and its trainer's fields that mark a file as a training file
TRAINING_METHOD_KEY = "alg"
TRAINER_FIELDS = ("max_iters", "max_epochs", "model_save_pt")
# EasyEdit's trainer counts these in iterations of one batch each and steps its optimiser every accumulate_bs
# iterations; adapterkit counts optimiser steps of accumulate_bs batches each (EasyEdit's key -> adapterkit's)
ITERATION_COUNTS = {"max_iters": "max_iters", "val_interval": "val_every", "early_stop_patience": "early_stop_patience"}


@lru_cache(maxsize=1)
def _document() -> dict:
    return json.loads(resources.files("adapterkit_schemas").joinpath(FIELDS_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _methods_matched() -> dict[str, tuple[str, dict]]:
    """Upper-cased alg_name -> (EasyEdit's own spelling, its dataclass): files match it in any case, and
    EasyEdit's loaders compare it exactly (``AlphaEdit``)."""
    return {name.upper(): (name, info) for name, info in _document()["methods"].items()}


def dataclass_info(alg_name: str, *, training: bool = False) -> dict | None:
    """EasyEdit's dataclass for a text method (class, file, fields, reference values), or None where it has none;
    ``training``: the one its trainer loads the method's training files with."""
    if training:
        return {name.upper(): info for name, info in _document()["training"].items()}.get(alg_name.upper())
    found = _methods_matched().get(alg_name.upper())
    return found[1] if found else None


def field_names(alg_name: str) -> set[str]:
    """The keys EasyEdit's own files for this method use, its editing and its training files (empty for a method
    EasyEdit does not have). One set for both: the hparams.yaml `adapterkit train` writes from a training file
    is an editing file holding the training file's keys."""
    infos = [dataclass_info(alg_name), dataclass_info(alg_name, training=True)]
    return {field for info in infos if info for field in info["fields"]} - {TRAINING_METHOD_KEY}


def is_training_file(document: Mapping[str, Any]) -> bool:
    """Whether ``document`` is an EasyEdit training file: the method under ``alg``, no ``alg_name``, and a field
    of EasyEdit's trainer (its editing files name the method ``alg_name``)."""
    return ("alg_name" not in document and isinstance(document.get(TRAINING_METHOD_KEY), str)
            and any(field in document for field in TRAINER_FIELDS))


def from_training_file(document: Mapping[str, Any]) -> dict:
    """An EasyEdit training file's keys as adapterkit reads them: ``alg`` is ``alg_name``, and its iteration
    counts (ITERATION_COUNTS) are optimiser steps, so that training runs as long, and validates and stops as
    often, as EasyEdit's trainer does with the file. Values of the wrong type are left for the schema check."""
    out = {"alg_name": document[TRAINING_METHOD_KEY], **{k: v for k, v in document.items() if k != TRAINING_METHOD_KEY}}
    accumulate = out.get("accumulate_bs", 1)
    if not _whole(accumulate) or accumulate < 1:
        return out
    for key in ITERATION_COUNTS:
        if _whole(out.get(key)) and out[key] >= 1:
            out[key] = -(-out[key] // accumulate)  # a partial step still runs
    return out


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def without_missing_model_paths(document: Mapping[str, Any], where: str) -> dict:
    """A training file's ``small_name`` that does not exist here as null, with a warning.

    Its model paths are EasyEdit's (./hugging_cache/...): adapterkit trains the model it is given and reads only
    ``small_name`` of them, so a missing one makes the counterfactual model a copy of the given model rather than
    stopping the run before it starts."""
    import warnings
    from pathlib import Path

    from ..errors import AdapterkitWarning

    small = document.get("small_name")
    if not (isinstance(small, str) and small and not Path(small).exists()):
        return dict(document)
    warnings.warn(f"{where}#/small_name: {small!r} does not exist here: SERAC's counterfactual model will be a copy of "
                  "the model being trained, as with small_name: null (fix: to train with a counterfactual model of "
                  "its own, set small_name to a local checkpoint directory with the model's vocabulary)",
                  AdapterkitWarning, stacklevel=4)
    return {**document, "small_name": None}


def required_fields(info: Mapping[str, Any]) -> list[str]:
    return [name for name, entry in info["fields"].items() if "default" not in entry]


def check_not_multimodal(document: Mapping[str, Any], alg_name: str, where: str, *, training: bool = False) -> None:
    """Refuse an EasyEdit multimodal file that carries a text method's alg_name (its MEND files for vision-language
    models say MEND, as do its MEND training files for those): it holds
    fields only a multimodal dataclass requires (``training``: a multimodal training dataclass)."""
    text_fields = field_names(alg_name)
    for name, info in _document()["training_multimodal" if training else "multimodal"].items():
        if name.upper() != alg_name.upper():
            continue
        marks = sorted(f for f in required_fields(info) if f not in text_fields and f in document)
        if marks:
            raise UnsupportedMethodError(
                f"{where}: an EasyEdit multimodal {alg_name.upper()} file (for {info['class']}: it sets "
                f"{', '.join(marks)}); adapterkit does not support multimodal editing",
                fix="adapterkit edits text models; use EasyEdit's multimodal editor for this file")


def multimodal_class(alg_name: str, *, training: bool = False) -> str | None:
    """EasyEdit's dataclass of a multimodal-only method (SERAC_MULTI), or None; ``training``: its training one."""
    info = _document()["training_multimodal" if training else "multimodal"].get(alg_name.upper())
    return info["class"] if info and alg_name.upper() not in _methods_matched() else None


def to_easyedit(settings, checkpoint: str, *, training: bool = False) -> tuple[dict, list[str], list[str]]:
    """``settings`` (built from what detect found) as EasyEdit's file for the method: exactly its dataclass's fields
    (``training``: its training dataclass's, which EasyEdit's trainer loads; MEND and SERAC have one).

    A field takes adapterkit's value (its setting, default filled in, under EasyEdit's name), else what fits the
    checkpoint, else the dataclass's default, else the value of EasyEdit's reference file for the method. A
    reference path that does not exist here is never written as if it did: a model path becomes null, the
    projection file a path of this model's own (see MODEL_PATHS, PROJECTION_FIELD).
    Returns the file, the fields whose value came from the reference file (the caller says so: review them), and
    a note for each path written that is not there (the caller says so too)."""
    info = dataclass_info(settings.alg_name, training=training)
    if info is None and training:
        trained = ", ".join(_document()["training"])
        raise AdapterkitError(f"EasyEdit trains no {settings.alg_name} editor: it has training files for {trained}",
                              fix=f"write --format easyedit (the editing file), or name a method EasyEdit trains ({trained})")
    if info is None:
        raise AdapterkitError(f"EasyEdit has no {settings.alg_name} hyperparameter dataclass to write for",
                              fix="write adapterkit's own format (leave out --format easyedit)")
    ours = {**{name: getattr(settings, name) for name in settings.setting_names()}, **settings.extra}
    reference = info["reference_values"]
    out: dict[str, Any] = {}
    from_reference = []
    method_key = TRAINING_METHOD_KEY if training else "alg_name"
    for field, entry in info["fields"].items():
        if field == method_key:  # EasyEdit's loaders compare its own spelling (AlphaEdit)
            out[field] = _methods_matched()[settings.alg_name.upper()][0]
            continue
        value = ours.get(settings.aliases.get(field, field))
        if value is not None or (field in KEEP_NONE and field in ours):
            out[field] = value
        elif field in CHECKPOINT_FIELDS:
            out[field] = CHECKPOINT_FIELDS[field]
        elif field == "tokenizer_name":
            out[field] = checkpoint
        elif field in FOR_NONE:
            out[field] = (FOR_NONE_TEXT if entry["type"] == "str" else FOR_NONE)[field]
        elif "default" in entry:
            out[field] = entry["default"]
        else:
            out[field] = reference.get(field)
            from_reference.append(field)
    out.setdefault(method_key, _methods_matched()[settings.alg_name.upper()][0])
    if training:  # adapterkit's optimiser steps as EasyEdit's iterations (from_training_file reads them back)
        for field, name in ITERATION_COUNTS.items():
            if field in out and field not in from_reference and _whole(out[field]):
                out[field] = getattr(settings, name) * settings.accumulate_bs
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
