"""A long stream on the 7B shape (issue #35): AlphaEdit (or ``--method``) through ``adapterkit.EditStream``, batches
of ``--batch`` distinct requests one on top of the last, on a 7B-shaped LLaMA with random weights in bf16.

Per batch: the seconds of ``stream.apply`` and of the stream's own bookkeeping inside it (the ledger's record of the
batch, the carried keys' fold; ``common.TimedBookkeeping``), and the GPU memory allocated after it (the stream must
keep it flat). ``--save-every K`` saves the stream every K batches with ``keep_in_memory=False`` (the ledger's deltas
spilled to disk), timed apart; ``--undo-depth N`` keeps only the last N batches' deltas (the folding is part of
the bookkeeping). ``--carried-on cpu device`` runs one stream per place of the carried moments. Before the stream, ``--calls`` independent ``adapterkit.edit`` calls of the same size
(each undone) give the per-request cost without a stream. Prints the projection to 10,000 edits.
Run: python benchmarks/bench_stream_7b.py [--batches 100] [--batch 100] [--max-seconds S] [--tiny] [--json FILE]
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.arch.registry import get_registry
from bench_7b import DTYPES, LLAMA_7B, TINY, build, environment
from bench_memit_scale import unique_requests
from common import TimedBookkeeping, setup, timed


def run_stream(model, tok, hp, stream_requests, place, device, scratch, call_seconds) -> dict:
    """One stream over ``stream_requests`` with the carried moments ``place``d; undone after."""
    stream = adapterkit.EditStream(model, tok, hp, keep_in_memory=not ARGS.save_every, carried_on=place,
                                   undo_depth=ARGS.undo_depth)
    bookkeeping = TimedBookkeeping(stream)
    base_memory = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    rows, started, saving = [], time.perf_counter(), 0.0
    for number, lo in enumerate(range(0, len(stream_requests), ARGS.batch), start=1):
        before = dict(bookkeeping.parts)
        seconds, _ = timed(lambda: stream.apply(stream_requests[lo: lo + ARGS.batch]), device)
        row = {"batch": number, "seconds": seconds,
               **{f"{part}_seconds": bookkeeping.parts[part] - before[part] for part in before},
               "memory_gib": ((torch.cuda.memory_allocated(device) - base_memory) / 2**30 if device.type == "cuda" else None)}
        if ARGS.save_every and number % ARGS.save_every == 0:
            row["save_seconds"], _ = timed(lambda: stream.save(scratch / f"stream-{place}"), device)
            saving += row["save_seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if time.perf_counter() - started > ARGS.max_seconds:
            print(f"stopped after batch {number}: --max-seconds {ARGS.max_seconds} passed")
            break
    edits = min(len(rows) * ARGS.batch, len(stream_requests))
    total = sum(r["seconds"] for r in rows)
    kept = sum(r[f"{part}_seconds"] for r in rows for part in bookkeeping.parts)
    steady = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    out = {"rows": rows, "edits": edits, "stream_seconds": total, "bookkeeping_share": kept / total,
           "save_seconds": saving, "per_request_s": total / edits,
           "projected_10000_min": statistics.mean(steady) / ARGS.batch * 10000 / 60,
           "memory_growth_gib": (rows[-1]["memory_gib"] - rows[0]["memory_gib"]) if device.type == "cuda" else None,
           "carried_keys": {w: stream.carried.count(w) for w in stream.carried.weights}}
    print(f"carried on {place}: {edits} edits in {len(rows)} batches: {total:.1f} s ({total / edits:.3f} s/request; "
          f"independent calls {statistics.mean(call_seconds) / ARGS.batch if call_seconds else float('nan'):.3f} "
          f"s/request); bookkeeping {kept:.1f} s = {kept / total:.1%} of the stream's time; saves {saving:.1f} s; "
          f"10,000 projected {out['projected_10000_min']:.1f} min; GPU memory after the first batch -> after the "
          f"last: {rows[0]['memory_gib']} -> {rows[-1]['memory_gib']} GiB")
    if stream.earliest_restorable:
        stream.as_edit_result().restore()  # the model as before the stream, for the next placement
    else:
        stream.restore(to=0)
    return out


def main() -> None:
    device, name, _, records, tok = setup()
    config = TINY if ARGS.tiny else LLAMA_7B
    model, spec = build(config, DTYPES[ARGS.dtype], device)
    out = {"environment": environment(name), "dtype": ARGS.dtype, "method": ARGS.method, "batch": ARGS.batch,
           "shape": {k: config[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size")}}
    print(f"device: {name}; {ARGS.method}, batches of {ARGS.batch}; {config['num_hidden_layers']} layers x "
          f"{config['hidden_size']} ({ARGS.dtype})")
    requests = unique_requests(records, ARGS.batch * (ARGS.batches + ARGS.calls + 1))
    scratch = Path(tempfile.mkdtemp())
    corpus = scratch / "corpus.txt"
    corpus.write_text("\n".join(r["prompt"] + " " + r["ground_truth"] for r in records) + "\n")
    hp = {**method_hparams(spec, config, get_registry().method(ARGS.method), model_name="llama-7b-shaped"),
          "mom2_corpus": str(corpus), "stats_dir": str(scratch / "stats"), "mom2_dataset": "bench",
          "mom2_n_samples": 1000}
    warm_up, calls, stream_requests = (requests[:ARGS.batch], requests[ARGS.batch: ARGS.batch * (1 + ARGS.calls)],
                                       requests[ARGS.batch * (1 + ARGS.calls):])
    seconds, result = timed(lambda: adapterkit.edit(model, tok, warm_up, hp, evaluate=False), device)
    result.restore()
    out["warm_up_seconds"] = seconds  # statistics pass, null-space bases, context templates
    print(f"warm-up (statistics, projections, templates): {seconds:.1f} s")
    call_seconds = []
    for lo in range(0, len(calls), ARGS.batch):
        seconds, result = timed(lambda: adapterkit.edit(model, tok, calls[lo: lo + ARGS.batch], hp, evaluate=False), device)
        result.restore()
        call_seconds.append(seconds)
        print(f"an independent edit call of {ARGS.batch} (undone after): {seconds:.2f} s")
    out["independent_calls_seconds"] = call_seconds

    for place in ARGS.carried_on:
        out[f"carried_on_{place}"] = run_stream(model, tok, hp, stream_requests, place, device, scratch, call_seconds)
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="AlphaEdit")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--calls", type=int, default=2, help="independent edit calls timed before the stream")
    parser.add_argument("--save-every", type=int, default=0, help="save (and spill the deltas) every K batches")
    parser.add_argument("--undo-depth", type=int, help="keep only the last N batches undoable (default: all)")
    parser.add_argument("--max-seconds", type=float, default=float("inf"), help="stop after the batch that passes it")
    parser.add_argument("--carried-on", nargs="+", default=["device"], choices=["device", "cpu"],
                        help="where the carried moments live; several: one stream each, in turn")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
