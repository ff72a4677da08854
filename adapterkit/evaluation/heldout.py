"""The held-out texts perplexity is measured on, before and after each edit.

By default: one sentence per record of the last ``DEFAULT_COUNT`` records of the CounterFact subset shipped in
``adapterkit/demo/data`` (its NOTICE.md says where the records come from), each the record's prompt followed by its
true answer ("The mother tongue of X is French."). The fact models learn at most the first 50 records, so these
are text they never saw; for a pretrained model they are short factual English sentences. A sentence naming a
subject the run edits is left out, so perplexity measures what the edits did not aim at. ``--heldout FILE`` gives
other texts: a text file with one text per line, or JSONL / a JSON list of strings or of objects with ``text``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from ..errors import AdapterkitError, RequestError
from ..files.safe_load import RECORDS_LIMIT, parse_json, read_text

DEFAULT_COUNT = 50
DEFAULT_SOURCE = f"adapterkit/demo/data/counterfact_sample.json (last {DEFAULT_COUNT} records, prompt + true answer)"


def default_texts() -> list[str]:
    from ..demo.facts import counterfact_sample

    return [f"{r['prompt']} {r['ground_truth']}." for r in counterfact_sample()[-DEFAULT_COUNT:]]


def read_texts(path) -> list[str]:
    """Texts from ``--heldout``: see the module docstring for the forms."""
    path = Path(path)
    text = read_text(path, limit=RECORDS_LIMIT, error=RequestError, what="held-out text file")
    fix = "write one text per line (.txt), or a JSONL / JSON list of strings or of {\"text\": ...} objects"
    if path.suffix == ".json":
        items = parse_json(text, str(path), error=RequestError, what="held-out text file", fix=fix)
        items = items if isinstance(items, list) else [items]
        where = [f"{path} item #{i}" for i in range(len(items))]
    elif path.suffix == ".jsonl":
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        items = [parse_json(line, f"{path} line {n}", error=RequestError, what="held-out text file", fix=fix)
                 for n, line in lines]
        where = [f"{path} line {n}" for n, _ in lines]
    else:
        items = [line for line in text.splitlines() if line.strip()]
        where = [str(path)] * len(items)
    texts = []
    for item, at in zip(items, where):
        item = item.get("text") if isinstance(item, dict) else item
        if not isinstance(item, str) or not item.strip():
            raise RequestError(f"{at}: a held-out text must be a non-empty string (or an object with 'text')", fix=fix)
        texts.append(item)
    if not texts:
        raise RequestError(f"{path}: holds no held-out texts", fix=fix)
    return texts


def without_subjects(texts: Iterable[str], subjects: Iterable[str]) -> list[str]:
    """The texts that name none of ``subjects``."""
    subjects = [s for s in set(subjects) if s]
    return [t for t in texts if not any(s in t for s in subjects)]


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()


def check_texts_left(texts: list[str], source: str) -> None:
    if not texts:
        raise AdapterkitError(f"{source}: every held-out text names a subject of the run's requests, so none is left "
                              "to measure perplexity on", fix="pass --heldout with texts about other subjects")
