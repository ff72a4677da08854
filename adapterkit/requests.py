"""Every accepted edit-request form, normalised to one record.

Accepted: CounterFact / EasyEdit records (``prompt`` contains the subject, ``target_new`` a string,
optional ``ground_truth``, ``rephrase_prompt``, ``locality_prompt``, ``locality_ground_truth``), ROME's
form (``prompt`` with ``{}``, ``target_new: {str: ...}``, ``target_true``) and CounterFact's
``requested_rewrite`` records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import RequestError
from .safe_load import load_json, load_jsonl


@dataclass(frozen=True)
class EditRequest:
    prompt: str                       # the prompt text with the subject filled in
    subject: str
    target_new: str                   # with one leading space, as the methods tokenise it after the prompt
    ground_truth: str | None = None
    rephrase_prompts: tuple[str, ...] = ()
    locality_prompts: tuple[str, ...] = ()
    locality_ground_truths: tuple[str, ...] = ()
    case_id: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def template(self) -> str:
        """The prompt with its first subject occurrence replaced by ``{}`` (ROME's form)."""
        return self.prompt.replace(self.subject, "{}", 1)


def _as_text(value, where: str, key: str, required: bool = True) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("str")
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RequestError(f"{where}: field {key!r} is missing or empty", fix=f"give {key} a non-empty string")
        return None
    if not isinstance(value, str):
        raise RequestError(f"{where}: field {key!r} must be a string, got {type(value).__name__}",
                           fix=f"write {key} as a string")
    return value


def _as_list(value, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (str, Mapping, list, tuple)):
        raise RequestError(f"{where}: field {key!r} must be a string or a list of strings, got {type(value).__name__}",
                           fix=f"write {key} as a string or a list of strings")
    values = [value] if isinstance(value, (str, Mapping)) else list(value)
    texts = []
    for i, item in enumerate(values):
        if isinstance(item, Mapping):
            item = item.get("prompt", item.get("str"))
        texts.append(_as_text(item, where, f"{key}[{i}]"))
    return tuple(texts)


def _with_space(text: str | None) -> str | None:
    return None if text is None else " " + text.lstrip(" ")


def normalise_request(record: Mapping[str, Any], where: str = "request") -> EditRequest:
    if not isinstance(record, Mapping):
        raise RequestError(f"{where}: a request is a mapping, got {type(record).__name__}")
    if "requested_rewrite" in record:  # CounterFact's original layout
        if not isinstance(record["requested_rewrite"], Mapping):
            raise RequestError(f"{where}: field 'requested_rewrite' must be an object, got {type(record['requested_rewrite']).__name__}",
                               fix="write requested_rewrite as CounterFact does: {prompt, subject, target_new, target_true}")
        rewrite = dict(record["requested_rewrite"])
        rewrite.setdefault("case_id", record.get("case_id"))
        rewrite["rephrase_prompt"] = record.get("paraphrase_prompts")
        neighbours = _as_list(record.get("neighborhood_prompts"), where, "neighborhood_prompts")
        rewrite["locality_prompt"] = neighbours
        rewrite["locality_ground_truth"] = [rewrite.get("target_true")] * len(neighbours)
        record = rewrite
    subject = _as_text(record.get("subject"), where, "subject")
    prompt = _as_text(record.get("prompt"), where, "prompt")
    if "{}" in prompt:
        prompt = prompt.replace("{}", subject, 1)
    elif subject not in prompt:
        raise RequestError(f"{where}: subject {subject!r} does not occur in prompt {prompt!r}",
                           fix="write the subject exactly as it appears in the prompt, or put '{}' where it goes")
    target = _as_text(record.get("target_new"), where, "target_new")
    truth = _as_text(record.get("ground_truth", record.get("target_true")), where, "ground_truth", required=False)
    locality = _as_list(record.get("locality_prompt", record.get("locality_prompts")), where, "locality_prompt")
    answers = _as_list(record.get("locality_ground_truth"), where, "locality_ground_truth")
    if answers and len(answers) != len(locality):
        raise RequestError(f"{where}: {len(locality)} locality prompt(s) but {len(answers)} locality ground truth(s)",
                           fix="give one locality_ground_truth per locality_prompt")
    rephrase = _as_list(record.get("rephrase_prompt", record.get("rephrase_prompts")), where, "rephrase_prompt")
    return EditRequest(prompt=prompt, subject=subject, target_new=_with_space(target), ground_truth=_with_space(truth),
                       rephrase_prompts=rephrase, locality_prompts=locality,
                       locality_ground_truths=tuple(_with_space(a) for a in answers),
                       case_id=record.get("case_id"))


def normalise_requests(requests: Mapping | Iterable | EditRequest, source: str = "request") -> list[EditRequest]:
    if isinstance(requests, (Mapping, EditRequest)):
        requests = [requests]
    out = [r if isinstance(r, EditRequest) else normalise_request(r, f"{source} #{i}")
           for i, r in enumerate(requests)]
    if not out:
        raise RequestError(f"{source}: no edit requests given", fix="pass at least one request")
    return out


def load_requests(path: str | Path) -> list[EditRequest]:
    """Requests from a JSON list / object or a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"{path}: no such requests file", fix="pass a JSON list of requests, or a JSONL file of one per line")
    if path.suffix == ".jsonl":
        records = [record for _, record in load_jsonl(path, error=RequestError, what="requests file")]
    else:
        records = load_json(path, error=RequestError, what="requests file")
    if not isinstance(records, (list, dict)):
        raise RequestError(f"{path}: holds a JSON {type(records).__name__}; requests are a list of objects (or one object)",
                           fix="write a JSON list of request objects")
    return normalise_requests(records, str(path))
