"""A run's folder: run.json (what ran: settings, fingerprints, versions), rows.jsonl (one row per request, appended
per finished edit or batch) and what resuming checks and reads back."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OutputError

FORMAT = "adapterkit-eval/1"
RUN_FILE, ROWS_FILE = "run.json", "rows.jsonl"


def check_out_dir(out) -> None:
    """Refuse, before any work, an --out that is a file or a directory holding something other than an eval run."""
    from ..files.atomic import check_writable

    out = Path(out)
    check_writable(out, what="evaluation run", directory=True, overwrite=True)
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_FILE).is_file():
        raise OutputError(f"{out}: holds files but no {RUN_FILE}, so it is not an `adapterkit eval` run to resume",
                          fix="choose an empty or new --out directory")


def _differences(old, new, path="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new)) for d in _differences(old.get(key), new.get(key), f"{path}.{key}".lstrip("."))]
    return [] if old == new else [f"{path}: {json.dumps(old, default=str)[:60]} then, {json.dumps(new, default=str)[:60]} now"]


def read_run_info(out: Path) -> dict:
    from ..files.safe_load import load_json

    info = load_json(out / RUN_FILE, error=OutputError, what="eval run file")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise OutputError(f"{out / RUN_FILE}: not a run file of this version of `adapterkit eval` (format {FORMAT})",
                          fix="choose another --out, or delete the directory to start the run again")
    return info


def open_run(out, run_info: dict, units: list[list[int]], say=lambda line: None) -> list[dict]:
    """Start the run in ``out`` (writing run.json), or resume it: the rows of the units already done."""
    from ..files.atomic import write_text_atomic

    out = Path(out)
    if not (out / RUN_FILE).is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / ROWS_FILE, "")
        write_text_atomic(out / RUN_FILE, json.dumps(run_info, indent=2) + "\n")
        return []
    previous = read_run_info(out)
    differences = _differences(previous.get("identity"), run_info["identity"])
    if differences:
        shown = "; ".join(differences[:4]) + (f" (and {len(differences) - 4} more)" if len(differences) > 4 else "")
        raise OutputError(f"{out}: holds a run with other settings, model or data, so it cannot be resumed: {shown}",
                          fix="run with the settings, model and data of that run to resume it, or choose another --out")
    if previous["environment"].get("versions") != run_info["environment"]["versions"]:
        import warnings

        warnings.warn(f"{out}: the run started with {previous['environment'].get('versions')} and resumes with "
                      f"{run_info['environment']['versions']}; report.json keeps the first")
    rows = read_rows(out, units)
    say(f"resuming {out}: {len(rows)} of {run_info['identity']['requests']} requests already measured")
    return rows


def read_rows(out: Path, units: list[list[int]]) -> list[dict]:
    """The rows of every unit whose rows are all in rows.jsonl; a unit cut short by a kill (its last line partial,
    or some of its rows missing) is dropped from the file."""
    from ..files.atomic import write_text_atomic

    path = out / ROWS_FILE
    lines = path.read_text(encoding="utf-8").split("\n") if path.is_file() else []
    rows, kept = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last line, cut short by a kill while it was written
                break
            raise OutputError(f"{path} line {number}: not a JSON row", fix="delete the directory to start the run again") from None
        if not isinstance(row, dict) or not isinstance(row.get("unit"), int) or not 0 <= row["unit"] < len(units):
            raise OutputError(f"{path} line {number}: not a row of this run", fix="delete the directory to start the run again")
        rows.append(row)
    by_unit: dict[int, list[dict]] = {}
    for row in rows:
        by_unit.setdefault(row["unit"], []).append(row)
    complete = {u for u, unit_rows in by_unit.items() if sorted(r["index"] for r in unit_rows) == units[u]}
    for row in rows:
        if row["unit"] in complete:
            kept.append(row)
    if len(kept) != len(rows) or len(lines) and lines[-1].strip():
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def append_rows(out: Path, rows: list[dict]) -> None:
    """One unit's rows, in one write, flushed to disk before the next unit starts."""
    data = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    fd = os.open(out / ROWS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def record_unit(out: Path, unit, indices, number: int, before, after, perplexity_before, perplexity_after) -> list[dict]:
    """The rows of one finished edit or batch (each request's metrics before and after, and the held-out perplexity
    of the model as edited then), appended to rows.jsonl."""
    from .measure import compare

    rows = compare(unit, before, after)
    for i, row in zip(indices, rows):
        row.update(index=i, unit=number, general={"perplexity": {"before": perplexity_before, "after": perplexity_after}})
    append_rows(out, rows)
    return rows
