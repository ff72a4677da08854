"""The one reader of edit records: every accepted form, from a file or from memory, becomes an ``EditRequest``.

Accepted (``RECORD_FORMATS``):

- CounterFact / EasyEdit / KnowEdit records: ``prompt`` containing the subject (or ``{}`` where it goes),
  ``subject``, ``target_new`` (a string, or ROME's ``{"str": ...}``), optional ``ground_truth`` /
  ``target_true``, ``rephrase_prompt``, ``locality_prompt`` + ``locality_ground_truth``, and KnowEdit's
  ``portability`` and ``locality`` groups (``{"Reasoning": [{"prompt": ..., "ground_truth": ...}], ...}``);
- CounterFact's original ``requested_rewrite`` records (``paraphrase_prompts``, ``neighborhood_prompts``);
- zsRE in MEND's format (``src``, ``subject``, ``alt``, ``answers``, ``rephrase``, ``loc``, ``loc_ans``); ``loc``
  is kept verbatim (``"nq question: who ..."``), as EasyEdit passes it; ``normalise_loc=True`` makes it a plain
  question (``"who ...?"``).

Files are a JSON list (or one object, or ``{"data": [...]}``) or JSONL (one record per line); every error
names the file, the record (``record #i`` in a list, ``line n`` in JSONL), the field and the fix. Fields a
format does not use are kept in ``EditRequest.extra``, never dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .arch.config_checks import is_count
from .errors import RequestError
from .files.safe_load import load_json, load_jsonl

RECORD_FORMATS = ("CounterFact / EasyEdit / KnowEdit (prompt, subject, target_new; optional ground_truth, "
                  "rephrase_prompt, locality_prompt, locality_ground_truth, portability, locality), CounterFact's "
                  "requested_rewrite records, or zsRE in MEND's format (src, subject, alt; optional answers, "
                  "rephrase, loc, loc_ans)")
ZSRE_LOC_PREFIX = "nq question: "


@dataclass(frozen=True)
class Probe:
    """A prompt whose answer is measured: a portability question, or a locality fact the edit must keep."""
    prompt: str
    answer: str                        # with one leading space, as target_new
    aliases: tuple[str, ...] = ()      # KnowEdit's other accepted answers; only ``answer`` is measured


@dataclass(frozen=True)
class ProbeGroup:
    """One named KnowEdit group (``Reasoning``, ``Relation_Specificity``, ...); metrics report it by name."""
    name: str
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class EditRequest:
    prompt: str                       # the prompt text with the subject filled in
    subject: str
    target_new: str                   # with one leading space, as the methods tokenise it after the prompt
    ground_truth: str | None = None
    rephrase_prompts: tuple[str, ...] = ()
    locality_prompts: tuple[str, ...] = ()
    locality_ground_truths: tuple[str, ...] = ()
    portability: tuple[ProbeGroup, ...] = ()       # scored by accuracy of the answer after the edit
    locality_groups: tuple[ProbeGroup, ...] = ()   # scored as locality: predictions unchanged by the edit
    case_id: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    origin: str | None = field(default=None, compare=False)  # "edits.jsonl line 3": where the record was read

    @property
    def template(self) -> str:
        """The prompt with its first subject occurrence replaced by ``{}`` (ROME's form)."""
        return self.prompt.replace(self.subject, "{}", 1)


# --- field readers --------------------------------------------------------------------------------
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


def _answers(value, where: str, key: str, required: bool = True) -> tuple[str, ...]:
    """An answer with its aliases: a string, a list of aliases, or KnowEdit's list of alias lists (flattened)."""
    if isinstance(value, (list, tuple)):
        flat = [a for item in value for a in (item if isinstance(item, (list, tuple)) else [item])]
        answers = tuple(_as_text(a, where, f"{key}[{i}]") for i, a in enumerate(flat))
        if answers or not required:
            return answers
        raise RequestError(f"{where}: field {key!r} is an empty list", fix=f"give {key} at least one answer")
    text = _as_text(value, where, key, required)
    return () if text is None else (text,)


def _with_space(text: str | None) -> str | None:
    return None if text is None else " " + text.lstrip(" ")


def _probe_groups(value, where: str, key: str) -> tuple[ProbeGroup, ...]:
    """KnowEdit's ``{group: [{"prompt", "ground_truth"}, ...]}``, or EasyEdit's ``{group: {"prompt": [...],
    "ground_truth": [...]}}``, as typed groups."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise RequestError(f"{where}: field {key!r} must be an object of named groups, got {type(value).__name__}",
                           fix=f'write {key} as {{"GroupName": [{{"prompt": "...", "ground_truth": "..."}}]}}')
    groups = []
    for name, items in value.items():
        pointer = f"{key}/{name}"
        if isinstance(items, Mapping):  # EasyEdit's columns: prompt and ground_truth lists of equal length
            prompts = _as_list(items.get("prompt"), where, f"{pointer}/prompt")
            truths = items.get("ground_truth")
            truths = [truths] if not isinstance(truths, (list, tuple)) or len(prompts) == 1 else list(truths)
            if len(truths) != len(prompts):
                raise RequestError(f"{where}: {pointer} has {len(prompts)} prompt(s) but {len(truths)} ground truth(s)",
                                   fix="give one ground_truth per prompt")
            items = [{"prompt": p, "ground_truth": t} for p, t in zip(prompts, truths)]
        if not isinstance(items, (list, tuple)):
            raise RequestError(f"{where}: field {pointer!r} must be a list of {{prompt, ground_truth}} objects, "
                               f"got {type(items).__name__}", fix=f'write {pointer} as [{{"prompt": "...", "ground_truth": "..."}}]')
        probes = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise RequestError(f"{where}: field '{pointer}/{i}' must be an object, got {type(item).__name__}",
                                   fix='write each probe as {"prompt": "...", "ground_truth": "..."}')
            prompt = _as_text(item.get("prompt"), where, f"{pointer}/{i}/prompt")
            answers = _answers(item.get("ground_truth"), where, f"{pointer}/{i}/ground_truth")
            probes.append(Probe(prompt, _with_space(answers[0]), answers[1:]))
        if probes:
            groups.append(ProbeGroup(str(name), tuple(probes)))
    return tuple(groups)


# --- the formats ----------------------------------------------------------------------------------
FLAT_KEYS = {"prompt", "subject", "target_new", "ground_truth", "target_true", "rephrase_prompt", "rephrase_prompts",
             "locality_prompt", "locality_prompts", "locality_ground_truth", "portability", "locality", "case_id"}
COUNTERFACT_KEYS = {"requested_rewrite", "paraphrase_prompts", "neighborhood_prompts", "case_id"}
ZSRE_KEYS = {"src", "subject", "alt", "answers", "rephrase", "loc", "loc_ans", "case_id"}


def is_zsre(record: Mapping[str, Any]) -> bool:
    return "src" in record or ("alt" in record and "prompt" not in record)


def zsre_question(loc: str) -> str:
    """``"nq question: who voiced gaston"`` -> ``"who voiced gaston?"`` (``normalise_loc``; EasyEdit keeps ``loc`` as it is)."""
    question = loc[len(ZSRE_LOC_PREFIX):] if loc.startswith(ZSRE_LOC_PREFIX) else loc
    question = question.strip()
    return question if question.endswith("?") else question + "?"


def _from_zsre(record: Mapping[str, Any], where: str, normalise_loc: bool = False) -> dict:
    """A zsRE (MEND format) record in the flat layout, naming zsRE's own fields in errors."""
    fields = {}
    for key in ("src", "subject", "alt"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            raise RequestError(f"{where}: zsRE field {key!r} is missing or empty",
                               fix=f"give {key} a non-empty string, or delete the record (zsRE records need src, subject and alt)")
        fields[key] = value
    answers = record.get("answers")
    if answers is not None and not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
        raise RequestError(f"{where}: zsRE field 'answers' must be a non-empty list of strings",
                           fix="write answers as a list whose first item is the true answer, e.g. [\"uniform\"]")
    if fields["subject"] not in fields["src"]:
        raise RequestError(f"{where}: zsRE subject {fields['subject']!r} does not occur in src {fields['src']!r}",
                           fix="write the subject exactly as it appears in src, or delete the record")
    loc, loc_ans = (_as_text(record.get(k), where, f"zsRE field {k!r}", required=False) for k in ("loc", "loc_ans"))
    if (loc is None) != (loc_ans is None):
        raise RequestError(f"{where}: zsRE field {'loc_ans' if loc_ans is None else 'loc'!r} is missing or empty "
                           f"while {'loc' if loc_ans is None else 'loc_ans'!r} is given",
                           fix="give both loc and loc_ans (the locality question and its answer), or neither")
    return {"prompt": fields["src"], "subject": fields["subject"], "target_new": fields["alt"],
            "ground_truth": answers[0] if answers else None, "rephrase_prompt": record.get("rephrase"),
            "locality_prompt": zsre_question(loc) if loc and normalise_loc else loc, "locality_ground_truth": loc_ans,
            "case_id": record.get("case_id")}


def _from_requested_rewrite(record: Mapping[str, Any], where: str) -> dict:
    """CounterFact's original layout: the rewrite, its paraphrases, and neighbours that keep the true answer."""
    if not isinstance(record["requested_rewrite"], Mapping):
        raise RequestError(f"{where}: field 'requested_rewrite' must be an object, got {type(record['requested_rewrite']).__name__}",
                           fix="write requested_rewrite as CounterFact does: {prompt, subject, target_new, target_true}")
    rewrite = dict(record["requested_rewrite"])
    rewrite.setdefault("case_id", record.get("case_id"))
    rewrite["rephrase_prompt"] = record.get("paraphrase_prompts")
    neighbours = _as_list(record.get("neighborhood_prompts"), where, "neighborhood_prompts")
    rewrite["locality_prompt"] = neighbours
    rewrite["locality_ground_truth"] = [rewrite.get("target_true")] * len(neighbours)
    return rewrite


def _from_flat(record: Mapping[str, Any], where: str, extra: Mapping[str, Any]) -> EditRequest:
    missing = [key for key in ("prompt", "subject", "target_new") if record.get(key) in (None, "")]
    if missing:
        raise RequestError(f"{where}: field {missing[0]!r} is missing or empty"
                           + (f" (also {', '.join(map(repr, missing[1:]))})" if missing[1:] else ""),
                           fix=f"give {missing[0]} a non-empty string; accepted record formats: {RECORD_FORMATS}")
    subject = _as_text(record.get("subject"), where, "subject")
    prompt = _as_text(record.get("prompt"), where, "prompt")
    if "{}" in prompt:
        prompt = prompt.replace("{}", subject, 1)
    elif subject not in prompt:
        raise RequestError(f"{where}: subject {subject!r} does not occur in prompt {prompt!r}",
                           fix="write the subject exactly as it appears in the prompt, or put '{}' where it goes")
    target = _as_text(record.get("target_new"), where, "target_new")
    truths = _answers(record.get("ground_truth", record.get("target_true")), where, "ground_truth", required=False)
    locality = _as_list(record.get("locality_prompt", record.get("locality_prompts")), where, "locality_prompt")
    answers = _as_list(record.get("locality_ground_truth"), where, "locality_ground_truth")
    if answers and len(answers) != len(locality):
        raise RequestError(f"{where}: {len(locality)} locality prompt(s) but {len(answers)} locality ground truth(s)",
                           fix="give one locality_ground_truth per locality_prompt")
    rephrase = _as_list(record.get("rephrase_prompt", record.get("rephrase_prompts")), where, "rephrase_prompt")
    return EditRequest(prompt=prompt, subject=subject, target_new=_with_space(target),
                       ground_truth=_with_space(truths[0]) if truths else None,
                       rephrase_prompts=rephrase, locality_prompts=locality,
                       locality_ground_truths=tuple(_with_space(a) for a in answers),
                       portability=_probe_groups(record.get("portability"), where, "portability"),
                       locality_groups=_probe_groups(record.get("locality"), where, "locality"),
                       case_id=record.get("case_id"), extra=extra, origin=where)


# Formats of EasyEdit's benchmarks that are recognised and refused by name: their fields, and what to do instead.
UNSUPPORTED_FORMATS = (
    ("KnowEdit's WikiBio (text, labels, concept)", lambda r: "text" in r and "labels" in r and "prompt" not in r,
     "WikiBio edits a long-form biography continuation, which adapterkit's methods do not model (they edit a fact: "
     "a prompt naming a subject, and a short target); use EasyEdit for WikiBio, or write each edit as a record with "
     "prompt, subject (words of the prompt) and target_new"),
    ("KnowEdit's Sanitation (question, target_new, ground_truth)",
     lambda r: "question" in r and "prompt" not in r and "src" not in r,
     "Sanitation records are questions put into EasyEdit's prompt template at run time, with no subject; write each "
     "as a record with prompt (the question as the model is asked it), subject (words of the prompt) and target_new"),
    ("CKnowEdit (prompt, target_new, target_old; no subject)",
     lambda r: "target_old" in r and "prompt" in r and "subject" not in r,
     "CKnowEdit records name no subject (EasyEdit's CKnowEditDataset cuts it out of the prompt's instruction); add "
     "a subject field, the words of the prompt the edit is about (e.g. the idiom after \"请解释如下成语：\"), and "
     "adapterkit reads them"),
)


def _refuse_unsupported_format(record: Mapping[str, Any], where: str) -> None:
    for name, matches, fix in UNSUPPORTED_FORMATS:
        if matches(record):
            raise RequestError(f"{where}: a {name} record; adapterkit does not support this format "
                               f"(it reads {RECORD_FORMATS})", fix=fix)


def normalise_request(record: Mapping[str, Any], where: str = "request", *, normalise_loc: bool = False) -> EditRequest:
    """One record of any accepted format as an EditRequest; ``where`` names it in errors and stays its origin.
    ``normalise_loc``: a zsRE ``loc`` loses its ``nq question:`` prefix and ends in ``?`` (else kept verbatim)."""
    if not isinstance(record, Mapping):
        raise RequestError(f"{where}: a request is a JSON object, got {type(record).__name__}",
                           fix=f"write each record as an object; accepted record formats: {RECORD_FORMATS}")
    if "requested_rewrite" in record:
        known, flat = COUNTERFACT_KEYS, _from_requested_rewrite(record, where)
    elif is_zsre(record):
        known, flat = ZSRE_KEYS, _from_zsre(record, where, normalise_loc)
    else:
        _refuse_unsupported_format(record, where)
        known, flat = FLAT_KEYS, record
    extra = {key: value for key, value in record.items() if key not in known}
    return _from_flat(flat, where, extra)


def normalise_requests(requests: Mapping | Iterable | EditRequest, source: str = "request", *,
                       normalise_loc: bool = False) -> list[EditRequest]:
    if isinstance(requests, (Mapping, EditRequest)):
        requests = [requests]
    out = [r if isinstance(r, EditRequest) else normalise_request(r, f"{source} #{i}", normalise_loc=normalise_loc)
           for i, r in enumerate(requests)]
    if not out:
        raise RequestError(f"{source}: no edit requests given", fix="pass at least one request")
    return out


# --- files ----------------------------------------------------------------------------------------
def read_record_file(path: str | Path, what: str = "requests file") -> list[tuple[str, Any]]:
    """``(where, record)`` for every record of a JSON or JSONL file; ``where`` is ``"FILE record #i"``
    (a JSON list) or ``"FILE line n"`` (JSONL, 1-based, blank lines counted)."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"{path}: no such {what}", fix="pass a JSON list of records, or a JSONL file of one per line")
    if path.suffix == ".jsonl":
        return [(f"{path} line {number}", record) for number, record in load_jsonl(path, error=RequestError, what=what)]
    document = load_json(path, error=RequestError, what=what)
    if isinstance(document, Mapping) and isinstance(document.get("data"), list):
        document = document["data"]
    if isinstance(document, Mapping) and isinstance(document.get("K_F"), list):
        raise RequestError(f"{path}: a KnowEdit Sanitation file (K_F: the knowledge to forget, K_R: to retain); "
                           f"adapterkit does not support this format (it reads {RECORD_FORMATS})",
                           fix=UNSUPPORTED_FORMATS[1][2])
    if isinstance(document, Mapping):
        return [(f"{path} record #0", document)]
    if not isinstance(document, list):
        raise RequestError(f"{path}: holds a JSON {type(document).__name__}; records are a list of objects (or one object)",
                           fix="write a JSON list of record objects, or one object per line in a .jsonl file")
    return [(f"{path} record #{i}", record) for i, record in enumerate(document)]


def load_requests(path: str | Path, *, normalise_loc: bool = False) -> list[EditRequest]:
    """Requests from a JSON list / object or a JSONL file, in any accepted record format (``normalise_loc``: see
    normalise_request)."""
    requests = [normalise_request(record, where, normalise_loc=normalise_loc) for where, record in read_record_file(path)]
    if not requests:
        raise RequestError(f"{path}: holds no records", fix=f"give at least one record; accepted formats: {RECORD_FORMATS}")
    return requests


# --- requests against the tokenizer and the model's positions -----------------------------------
def context_reserve(tok, settings) -> int:
    """Tokens a context template of ``settings`` (a method's settings, or None) may put before a prompt: the
    longest fixed template, or the longest sampled length of ``context_template_length_params`` plus its
    separator ('. ')."""
    fixed = getattr(settings, "context_templates", None)
    if isinstance(fixed, (list, tuple)) and fixed:
        return max(len(tok(str(t).replace("{}", ""))["input_ids"]) for t in fixed)
    params = getattr(settings, "context_template_length_params", None) or ()
    lengths = [p[0] for p in params if isinstance(p, (list, tuple)) and p and is_count(p[0])]
    return max(lengths) + len(tok(". ")["input_ids"]) if lengths else 0


def check_requests_fit(requests: Sequence, tok, model, spec, settings=None, source: str = "request") -> None:
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
    reserve = context_reserve(tok, settings)
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
