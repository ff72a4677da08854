"""Training records for the learned editors (MEND, SERAC), in both of EasyEdit's formats.

CounterFact / KnowEdit records (``prompt``, ``subject``, ``target_new``, ``ground_truth``,
``rephrase_prompt``, ``locality_prompt``, ``locality_ground_truth``) and zsRE records in MEND's format
(``src``, ``subject``, ``rephrase``, ``alt``, ``answers``, ``loc``, ``loc_ans``) both become
:class:`adapterkit.requests.EditRequest`. zsRE's locality question ``"nq question: who ..."`` becomes the
locality prompt ``"who ...?"``, as EasyEdit's zsRE loaders write it.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import RequestError
from ..requests import EditRequest, normalise_request
from ..safe_load import load_json, load_jsonl

ZSRE_KEYS = ("src", "alt")
ZSRE_LOC_PREFIX = "nq question: "
MAX_LISTED_PROBLEMS = 5


def is_zsre(record: Mapping[str, Any]) -> bool:
    return all(key in record for key in ZSRE_KEYS)


def zsre_question(loc: str) -> str:
    """``"nq question: who voiced gaston"`` -> ``"who voiced gaston?"``."""
    question = loc[len(ZSRE_LOC_PREFIX):] if loc.startswith(ZSRE_LOC_PREFIX) else loc
    question = question.strip()
    return question if question.endswith("?") else question + "?"


def zsre_to_counterfact(record: Mapping[str, Any], where: str) -> dict:
    """One zsRE (MEND format) record as a CounterFact-style record, naming zsRE's fields in errors."""
    for key in ("src", "subject", "alt", "rephrase", "loc", "loc_ans"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            raise RequestError(f"{where}: zsRE field {key!r} is missing or empty",
                               fix=f"give {key} a non-empty string, or delete the record")
    answers = record.get("answers")
    if not isinstance(answers, list) or not answers or not isinstance(answers[0], str):
        raise RequestError(f"{where}: zsRE field 'answers' must be a non-empty list of strings",
                           fix="write answers as a list whose first item is the true answer, e.g. [\"uniform\"]")
    if record["subject"] not in record["src"]:
        raise RequestError(f"{where}: zsRE subject {record['subject']!r} does not occur in src {record['src']!r}",
                           fix="write the subject exactly as it appears in src, or delete the record")
    return {"prompt": record["src"], "subject": record["subject"], "target_new": record["alt"],
            "ground_truth": answers[0], "rephrase_prompt": record["rephrase"],
            "locality_prompt": zsre_question(record["loc"]), "locality_ground_truth": record["loc_ans"],
            "case_id": record.get("case_id")}


def normalise_training_record(record: Any, where: str) -> EditRequest:
    if isinstance(record, Mapping) and is_zsre(record):
        record = zsre_to_counterfact(record, where)
    if not isinstance(record, Mapping):
        raise RequestError(f"{where}: a training record is a JSON object, got {type(record).__name__}",
                           fix="write each record as an object with CounterFact or zsRE (MEND) fields")
    request = normalise_request(record, where)
    if not request.locality_prompts:
        raise RequestError(f"{where}: field 'locality_prompt' (zsRE: 'loc') is missing; the editors train "
                           "their locality loss on it", fix="give every training record a locality prompt")
    return request


def read_records(path: str | Path) -> list:
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"{path}: no such training file", fix="pass the path of a JSON or JSONL file of records")
    if path.suffix == ".jsonl":
        return [record for _, record in load_jsonl(path, error=RequestError, what="training file")]
    document = load_json(path, error=RequestError, what="training file", fix="repair the file; each record is a JSON object")
    if isinstance(document, Mapping) and isinstance(document.get("data"), list):
        return document["data"]
    if not isinstance(document, list):
        raise RequestError(f"{path}: a training file holds a JSON list of records, found {type(document).__name__}",
                           fix="write the records as a JSON list, or one JSON object per line (.jsonl)")
    return document


def normalise_training_records(records: Sequence, source: str, *, skip_malformed: bool = False) -> list[EditRequest]:
    """Every record as an EditRequest; malformed ones raise (all of them listed) or, if asked, are skipped."""
    requests, problems = [], []
    for index, record in enumerate(records):
        try:
            requests.append(normalise_training_record(record, f"{source} record #{index}"))
        except RequestError as exc:
            problems.append(exc)
    if problems and not skip_malformed:
        listed = "\n  ".join(str(p) for p in problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise RequestError(f"{source}: {len(problems)} malformed training record(s):\n  {listed}{more}",
                           fix="repair or delete those records, or set `skip_malformed: true` in the hparams "
                               "to leave them out")
    if problems:
        warnings.warn(f"{source}: skipped {len(problems)} malformed training record(s); the first: {problems[0].message}")
    if not requests:
        raise RequestError(f"{source}: the dataset is empty (no usable training records)",
                           fix="give at least one CounterFact or zsRE (MEND) record")
    return requests


def load_training_records(path: str | Path, *, skip_malformed: bool = False) -> list[EditRequest]:
    """EditRequests from a CounterFact / KnowEdit or zsRE (MEND) training file (JSON list or JSONL)."""
    return normalise_training_records(read_records(path), str(path), skip_malformed=skip_malformed)
