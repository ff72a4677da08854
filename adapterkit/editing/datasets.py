"""Training records for the learned editors (MEND, SERAC), read by the one record reader
(:mod:`adapterkit.requests`): CounterFact / KnowEdit records and zsRE records in MEND's format alike.

What training adds: every record needs a locality prompt for the editors' locality loss (a flat
``locality_prompt``, zsRE's ``loc``, or KnowEdit's ``locality`` groups), and malformed records may be
skipped instead of refused.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Sequence

from ..errors import RequestError
from ..requests import EditRequest, normalise_request, read_record_file

MAX_LISTED_PROBLEMS = 5


def normalise_training_record(record: Any, where: str, *, normalise_loc: bool = False) -> EditRequest:
    request = record if isinstance(record, EditRequest) else normalise_request(record, where, normalise_loc=normalise_loc)
    if not request.locality_prompts and request.locality_groups:
        probes = [probe for group in request.locality_groups for probe in group.probes]
        request = dataclasses.replace(request, locality_prompts=tuple(p.prompt for p in probes),
                                      locality_ground_truths=tuple(p.answer for p in probes))
    if not request.locality_prompts:
        raise RequestError(f"{where}: field 'locality_prompt' (zsRE: 'loc') is missing; the editors train "
                           "their locality loss on it", fix="give every training record a locality prompt "
                           "(KnowEdit records: a `locality` group)")
    return request


def read_records(path: str | Path) -> list[tuple[str, Any]]:
    """``(where, record)`` for each record of a training file (JSON list or JSONL)."""
    return read_record_file(path, what="training file")


def normalise_training_records(records: Sequence[tuple[str, Any]], source: str, *,
                                skip_malformed: bool = False, normalise_loc: bool = False) -> list[EditRequest]:
    """Every ``(where, record)`` as an EditRequest; malformed ones raise (all of them listed) or, if asked, are skipped."""
    requests, problems = [], []
    for where, record in records:
        try:
            requests.append(normalise_training_record(record, where, normalise_loc=normalise_loc))
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


def load_training_records(path: str | Path, *, skip_malformed: bool = False,
                          normalise_loc: bool = False) -> list[EditRequest]:
    """EditRequests from a CounterFact / KnowEdit or zsRE (MEND) training file (JSON list or JSONL)."""
    return normalise_training_records(read_records(path), str(path), skip_malformed=skip_malformed,
                                      normalise_loc=normalise_loc)
