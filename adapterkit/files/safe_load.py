"""Bounded reading of the text documents adapterkit accepts: YAML, JSON and JSONL.

A document is refused, before parsing, when it is larger than its limit; text must be UTF-8; and a YAML
document whose aliases would expand it beyond ``ALIAS_BUDGET`` extra nodes (a "billion laughs" document)
is refused after loading, which keeps aliases as shared references and so stays linear in the file's size.
Every failure is the caller's ``AdapterkitError`` subclass, naming the file and the fix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import AdapterkitError

MiB = 1 << 20
DOCUMENT_LIMIT = MiB // 4      # hyperparameter files and plugin declarations: a few KiB each, parsed within a second
CONFIG_LIMIT = 16 * MiB        # config.json and *.index.json (large id2label maps and shard indexes stay well below)
RECORDS_LIMIT = 256 * MiB      # request, training and corpus record files
ALIAS_BUDGET = 10_000          # nodes that YAML aliases may add beyond the document's own

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path, *, limit: int, error: type[AdapterkitError], what: str) -> str:
    """The UTF-8 text of ``path``, refused when missing, larger than ``limit`` bytes, or not UTF-8."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise error(f"{path}: not a file", fix=f"pass the {what} file itself")
        if size > limit:
            raise error(f"{path}: {size / MiB:.1f} MiB, larger than the {limit / MiB:g} MiB adapterkit reads as a {what}",
                        fix=f"check that this is the {what} you meant; split a larger one into several files")
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such file", fix=f"check the path of the {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})",
                    fix="check the path and its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start} is {data[exc.start:exc.start + 1]!r}); "
                    f"is it a binary file?", fix=f"pass the {what} as UTF-8 text") from None


def load_yaml(path, *, error: type[AdapterkitError], what: str, limit: int | None = None) -> Any:
    """A YAML (or JSON) document, read within ``limit`` and ``ALIAS_BUDGET``."""
    text = read_text(path, limit=limit or DOCUMENT_LIMIT, error=error, what=what)
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}", fix=f"repair the {what}; YAML and JSON are both accepted") from None
    except (RecursionError, ValueError, TypeError) as exc:  # nesting too deep, integers too long, unhashable keys
        raise error(f"{path}: cannot be read as YAML ({type(exc).__name__}: {exc})",
                    fix=f"write the {what} as plain nested mappings and lists") from None
    excess = alias_excess(document)
    if excess is None:
        raise error(f"{path}: a YAML alias refers to a node that contains it (a cycle)",
                    fix="remove the recursive anchor; adapterkit's files need no aliases")
    if excess > ALIAS_BUDGET:
        raise error(f"{path}: YAML aliases expand the document by over {ALIAS_BUDGET} nodes (a 'billion laughs' document?)",
                    fix=f"write the {what} without nested aliases")
    return document


def load_json(path, *, error: type[AdapterkitError], what: str, limit: int | None = None, fix: str | None = None) -> Any:
    text = read_text(path, limit=limit or RECORDS_LIMIT, error=error, what=what)
    return parse_json(text, str(path), error=error, what=what, fix=fix)


def load_jsonl(path, *, error: type[AdapterkitError], what: str, limit: int | None = None) -> list[tuple[int, Any]]:
    """(1-based line number, value) for every non-blank line.

    Lines end at "\n" only: ``str.splitlines`` would also split at U+2028, U+0085 or form feeds, which JSON
    strings may hold raw, breaking the record and shifting every later line number.
    """
    text = read_text(path, limit=limit or RECORDS_LIMIT, error=error, what=what)
    return [(number, parse_json(line, f"{path} line {number}", error=error, what=what, one_line=True))
            for number, line in enumerate(text.split("\n"), 1) if line.strip()]


def parse_json(text: str, where: str, *, error: type[AdapterkitError], what: str, fix: str | None = None,
               one_line: bool = False) -> Any:
    """``one_line``: ``text`` is one line of a JSONL file, which ``where`` names, so only the column is reported."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        raise error(f"{where}: not valid JSON ({at}): {exc.msg}",
                    fix=fix or (f"repair that line of the {what}: each line holds one complete JSON object"
                                if one_line else f"repair the {what}")) from None
    except (RecursionError, ValueError) as exc:  # nesting too deep, integers too long
        raise error(f"{where}: cannot be read as JSON ({type(exc).__name__}: {exc})",
                    fix=fix or f"repair the {what}") from None


def alias_excess(document: Any) -> int | None:
    """How many nodes shared references (YAML aliases) add when the document is expanded; None for a cycle.

    Sizes are memoised per container, so a document that expands exponentially is measured in linear time.
    """
    sizes: dict[int, int] = {}
    unique = 0
    in_progress: set[int] = set()
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        if children_done:
            sizes[key] = 1 + sum(sizes.get(id(c), 1) if isinstance(c, (dict, list)) else 1 for c in children)
            in_progress.discard(key)
            continue
        if key in sizes:
            continue
        if key in in_progress:
            return None
        in_progress.add(key)
        unique += 1 + sum(1 for c in children if not isinstance(c, (dict, list)))
        stack.append((node, True))
        for child in children:
            if isinstance(child, (dict, list)):
                if id(child) in in_progress:
                    return None
                stack.append((child, False))
    total = sizes.get(id(document), 1) if isinstance(document, (dict, list)) else 1
    return total - unique
