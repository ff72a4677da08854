"""`adapterkit eval` killed for real: the command runs as a subprocess, gets SIGKILL once rows.jsonl holds a row, and
is started again with the same --out; it ends with the rows, report (and for --sequential the curve and the edited
weights) of an uninterrupted run. test_eval.py and test_streams.py interrupt in-process at chosen points; here the
kill lands wherever the run happens to be."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from adapterkit.checkpoints.loading import load_model
from adapterkit.demo.facts import counterfact_sample
from adapterkit.evaluation.run import EvalSettings, run_eval
from adapterkit.streams import EditStream
# the random GPT-2 checkpoint with a tokenizer and ROME settings for it; torch on one thread in this process
from test_eval import one_thread, tiny  # noqa: F401

# enough units that the run is still going when its first row is seen (a unit takes a fraction of a second)
RECORDS = 16
FIRST_ROW_SECONDS = 60  # model load and the first unit, on a loaded machine


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(counterfact_sample()[:RECORDS]))
    return path


def eval_command(tiny, data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "adapterkit", "eval", str(tiny.model), "--hparams", str(tiny.hparams), "--data",
            str(data), "--out", str(out), "--max-new-tokens", "4", "--fluency-max-new-tokens", "4", *extra]


def environment() -> dict:
    # one thread, as the uninterrupted run in this process (one_thread): the same arithmetic in both
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def uninterrupted(tiny, data, out, **settings) -> dict:
    return run_eval(tiny.model, tiny.hparams, data, out, EvalSettings(max_new_tokens=4, fluency_max_new_tokens=4, **settings))


def finish(command, log) -> None:
    with open(log, "w") as stderr:
        done = subprocess.run(command, env=environment(), stdout=subprocess.DEVNULL, stderr=stderr, timeout=300)
    assert done.returncode == 0, log.read_text()[-2000:]


def kill_after_first_row(command, out, log) -> int:
    """Start ``command``, SIGKILL it as soon as out/rows.jsonl holds a whole row; the rows it had written."""
    rows = out / "rows.jsonl"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + FIRST_ROW_SECONDS
            while process.poll() is None and time.monotonic() < deadline:
                if rows.is_file() and b"\n" in rows.read_bytes():
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.01)
        finally:
            if process.poll() is None and process.returncode is None:
                process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-way ({process.returncode}): " + \
        log.read_text()[-2000:]
    assert not (out / "report.json").exists()
    written = rows.read_bytes().count(b"\n")
    assert 1 <= written < RECORDS
    return written


def report(out) -> dict:
    return json.loads((out / "report.json").read_text())


def test_a_run_killed_with_sigkill_resumes_and_ends_as_an_uninterrupted_one(tiny, data, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    uninterrupted(tiny, data, whole)
    kill_after_first_row(eval_command(tiny, data, resumed), resumed, tmp_path / "killed.log")
    finish(eval_command(tiny, data, resumed), tmp_path / "resumed.log")
    assert "resuming" in (tmp_path / "resumed.log").read_text()
    # a report holds no timings or timestamps: everything in it must match
    assert report(resumed) == report(whole) and report(whole)["counts"]["requests"] == RECORDS
    assert (resumed / "rows.jsonl").read_bytes() == (whole / "rows.jsonl").read_bytes()


def test_a_sequential_run_killed_with_sigkill_resumes_with_the_same_curve_and_weights(tiny, data, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    extra = ("--sequential", "--batch", "2", "--every", "4")
    uninterrupted(tiny, data, whole, sequential=True, batch=2, every=4)
    kill_after_first_row(eval_command(tiny, data, resumed, *extra), resumed, tmp_path / "killed.log")
    finish(eval_command(tiny, data, resumed, *extra), tmp_path / "resumed.log")
    assert "resuming the stream" in (tmp_path / "resumed.log").read_text()
    assert report(resumed) == report(whole) and report(whole)["counts"] == {"requests": RECORDS, "units": RECORDS // 2}
    for name in ("rows.jsonl", "curve.jsonl"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    curve = [json.loads(line) for line in (whole / "curve.jsonl").read_text().splitlines()]
    assert [point["edits"] for point in curve] == list(range(4, RECORDS + 1, 4))
    # the saved streams put the same weights into the unedited model, bit for bit
    final = []
    for out in (whole, resumed):
        model, tok = load_model(tiny.model)
        stream = EditStream.load(out / "stream", model, tok)
        assert len(stream) == RECORDS // 2
        final.append({name: p.detach().clone() for name, p in model.named_parameters()})
    unedited, _ = load_model(tiny.model)
    changed = [n for n, p in unedited.named_parameters() if not torch.equal(p, final[0][n])]
    assert changed  # the stream's edits are in the weights compared
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][n], final[1][n]) for n in final[0])
