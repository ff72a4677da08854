"""``adapterkit eval --sequential``: lifelong editing measured as the edits pile up.

Batches of ``batch`` requests are applied one after another through an ``EditStream`` and never undone. Each
batch's own rows (before and after its edit) go to rows.jsonl as in the other modes, ``before`` being the weights
the earlier batches left. After every ``every`` edits (and after the last) every request edited so far is measured
again on the weights now in the model: retained efficacy (teacher-forced and greedy), generalisation, and locality
against the unedited model's predictions, with the held-out perplexity; each such point is one line of
``curve.jsonl`` and a point of ``curve.png`` (with matplotlib).

Resuming: the stream is saved in ``out/stream`` after each batch, before the batch's rows are written, so a killed
run finds a stream with as many batches as it has complete units, or one more (restored away); curve points past
the last complete unit are dropped and measured again. Only that last batch stays undoable (older ones are folded
into the stream's base), so the folder holds the edited weights and one batch's deltas however long the run.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import OutputError
from .measure import compare, observe
from .rundir import record_unit

CURVE_FILE, STREAM_DIR = "curve.jsonl", "stream"
RESUME_DEPTH = 1  # a resumed run takes back at most the batch whose rows were not written
CURVE_METRICS = ("teacher_forced.rewrite_acc", "greedy.rewrite_exact_match", "teacher_forced.rephrase_acc",
                 "greedy.rephrase_exact_match", "teacher_forced.locality_acc", "greedy.locality_unchanged",
                 "prob.efficacy_score", "prob.neighborhood_score", "prob.rewrite_new_token_prob")


def without_fluency(requests):
    """The requests without their fluency prompts: a curve point re-measures answers, not 100-token continuations."""
    return [dataclasses.replace(r, extra={k: v for k, v in r.extra.items() if k != "generation_prompts"}) for r in requests]


def curve_points(edits: list[int], every: int) -> list[int]:
    """The edit counts after which the curve is measured: each time another ``every`` edits are done, and the end."""
    points, mark = [], every
    for count in edits:
        if count >= mark or count == edits[-1]:
            points.append(count)
            mark = (count // every + 1) * every
    return points


def read_curve(out: Path, done_edits: int) -> list[dict]:
    from ..files.atomic import write_text_atomic

    path = out / CURVE_FILE
    if not path.is_file():
        return []
    kept, lines = [], path.read_text(encoding="utf-8").split("\n")
    for line in lines:
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = None  # a line cut short by a kill
        if isinstance(row, dict) and isinstance(row.get("edits"), int) and row["edits"] <= done_edits:
            kept.append(row)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def open_stream(out: Path, model, tok, settings, done_units: int, say):
    from ..streams import EditStream
    from ..streams.folder import MANIFEST

    folder = out / STREAM_DIR
    if not (folder / MANIFEST).is_file():
        if done_units:
            raise OutputError(f"{out}: {done_units} unit(s) are done but {folder} holds no saved stream to continue",
                              fix="delete the directory to start the run again")
        return EditStream(model, tok, settings, keep_in_memory=False, undo_depth=RESUME_DEPTH)
    stream = EditStream.load(folder, model, tok, settings)
    if len(stream) < done_units:
        raise OutputError(f"{folder}: holds {len(stream)} batch(es), and {done_units} unit(s) have rows",
                          fix="delete the directory to start the run again")
    if len(stream) > done_units:  # killed after saving the stream, before writing that batch's rows
        stream.restore(to=done_units)
    say(f"resuming the stream in {folder}: {len(stream)} batch(es) applied again")
    return stream


def run_sequential(prepared, out: Path, settings, units, rows, *, hparams, data, archive, say, on_unit_done):
    """The sequential loop of run_eval; returns the rows of every unit (the caller writes the report)."""
    from .metrics import perplexity
    from ..editing.progress import counter

    model, tok, requests = prepared.model, prepared.tok, prepared.requests
    measure = settings.measure_settings()
    done = sorted({row["unit"] for row in rows})
    if done != list(range(len(done))):
        raise OutputError(f"{out}: a sequential run's units are done in order, and these are not ({done[:5]}...)",
                          fix="delete the directory to start the run again")
    say("measuring every request on the unedited model (the locality reference for the curve)")
    light = without_fluency(requests)
    base = observe(model, tok, light, measure, prepared.wrap)
    baseline = perplexity(model, tok, prepared.heldout)
    edited_after = [sum(len(u) for u in units[: i + 1]) for i in range(len(units))]
    points = set(curve_points(edited_after, settings.every or settings.batch))
    curve = read_curve(out, edited_after[len(done) - 1] if done else 0)
    measured = {row["edits"] for row in curve}
    stream = open_stream(out, model, tok, prepared.method_settings, len(done), say)
    bar = counter(len(requests), desc="eval --sequential", unit="edit")
    bar.update(len(rows))
    try:
        for u, indices in enumerate(units):
            if u < len(done):
                continue
            unit = [requests[i] for i in indices]
            before = observe(model, tok, unit, measure, prepared.wrap)
            stream.apply(unit, archive=archive, requests_source=str(data))
            after = observe(model, tok, unit, measure, prepared.wrap)
            edited_perplexity = perplexity(model, tok, prepared.heldout)
            stream.save(out / STREAM_DIR)
            unit_rows = record_unit(out, unit, indices, u, before, after, baseline, edited_perplexity)
            rows += unit_rows
            bar.update(len(unit_rows))
            count = edited_after[u]
            if count in points and count not in measured:
                curve.append(curve_point(model, tok, light[:count], base[:count], measure, prepared, count, len(stream),
                                         edited_perplexity, baseline))
                append_curve(out, curve[-1])
                say(f"after {count} edits: retained rewrite accuracy "
                    f"{curve[-1]['metrics']['teacher_forced.rewrite_acc']}")
            if on_unit_done is not None:
                on_unit_done(u, unit_rows)
    finally:
        bar.close()
    plot_curve(curve, out / "curve.png", prepared.run_info)
    return rows


def curve_point(model, tok, earlier, base, measure, prepared, count: int, batches: int, edited_perplexity, baseline) -> dict:
    now = observe(model, tok, earlier, measure, prepared.wrap)
    compared = compare(earlier, base, now)
    metrics = {}
    for name in CURVE_METRICS:
        values = [r["metrics"]["after"].get(name) for r in compared]
        values = [v for v in values if v is not None]
        metrics[name] = sum(values) / len(values) if values else None
    return {"edits": count, "batches": batches, "metrics": metrics,
            "perplexity": {"before": baseline, "after": edited_perplexity}}


def append_curve(out: Path, point: dict) -> None:
    import os

    fd = os.open(out / CURVE_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(point) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def plot_curve(curve: list[dict], path: Path, run_info: dict) -> Path | None:
    """Retained efficacy and locality against the number of edits (None without matplotlib or points)."""
    from .report import _figure, _save, plot_available

    if not plot_available() or not curve:
        return None
    figure = _figure(7.0, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    edits = [p["edits"] for p in curve]
    for name in ("teacher_forced.rewrite_acc", "greedy.rewrite_exact_match", "teacher_forced.rephrase_acc",
                 "teacher_forced.locality_acc"):
        values = [p["metrics"].get(name) for p in curve]
        if any(v is not None for v in values):
            axes.plot(edits, [v if v is not None else float("nan") for v in values], marker="o", label=name)
    axes.set_xlabel("edits applied")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"{run_info['identity']['method']}: every earlier edit measured again")
    axes.legend(fontsize=7)
    return _save(figure, path)
