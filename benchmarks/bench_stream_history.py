"""What a stream's undo history costs, and what ``undo_depth`` saves (issue #35): the same batches of CounterFact
edits applied to a model through ``adapterkit.EditStream`` once per depth (every batch undoable, the last one, none),
each stream on the unedited weights. Per depth: the stream's bookkeeping seconds per batch (the ledger's record,
the carried keys' fold, the folding into the base; ``common.TimedBookkeeping``), the bytes the stream holds in
memory for undo after the last batch, and the saved folder's size and the save's seconds; then the weights after
the last batch compared bit for bit with the first depth's.
Run: python benchmarks/bench_stream_history.py MODEL_DIR --records counterfact.json [--method alphaedit]
         [--batches 20] [--batch 1] [--depths all 1 0] [--stats-dir DIR] [--json FILE]
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import adapterkit
from adapterkit.checkpoints.loading import load_model
from common import TimedBookkeeping
from smollm2_batches import TESTS_DATA, detected_hparams


def held_bytes(stream) -> int:
    """Bytes of the stream's undo history in memory: originals, the base, every batch's kept tensors."""
    ledger = stream.ledger
    tensors = [*ledger.originals.values(), *ledger.base.values()]
    tensors += [t for batch in ledger.batches if batch.tensors for t in batch.tensors.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(model, tok, hparams, batches, depth, scratch) -> tuple[dict, dict]:
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    stream = adapterkit.EditStream(model, tok, hparams, undo_depth=depth)
    bookkeeping = TimedBookkeeping(stream)
    per_batch = []
    for batch in batches:
        before = bookkeeping.seconds
        stream.apply(batch)
        per_batch.append(bookkeeping.seconds - before)
    folder = scratch / f"stream-{depth}"
    started = time.perf_counter()
    stream.save(folder)
    save_seconds = time.perf_counter() - started
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = {"undo_depth": depth, "batches": len(batches), "bookkeeping_s_per_batch": statistics.mean(per_batch),
           "held_mib": held_bytes(stream) / 2**20, "folder_mib": folder_bytes(folder) / 2**20,
           "save_s": save_seconds, "earliest_restorable": stream.earliest_restorable}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(original[name])
    return out, after


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(ARGS.model, dtype="float32")
    model = model.to(device)
    hparams = detected_hparams(ARGS.model, ARGS.method.upper(), str(TESTS_DATA / "smollm2_stats_corpus.txt"),
                               ARGS.stats_dir)
    records = json.loads(Path(ARGS.records).read_text())[: ARGS.batches * ARGS.batch]
    batches = [records[lo: lo + ARGS.batch] for lo in range(0, len(records), ARGS.batch)]
    scratch = Path(tempfile.mkdtemp())
    rows, first = [], None
    for word in ARGS.depths:
        depth = None if word == "all" else int(word)
        row, weights = run(model, tok, hparams, batches, depth, scratch)
        first = first or weights
        row["same_weights_as_first"] = all(torch.equal(weights[n], first[n]) for n in first)
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{name}, {ARGS.method}, {len(batches)} batches of {ARGS.batch}:")
    for row in rows:
        print(f"  undo_depth {row['undo_depth']}: bookkeeping {row['bookkeeping_s_per_batch']:.3f} s a batch; undo "
              f"history in memory {row['held_mib']:.0f} MiB; saved folder {row['folder_mib']:.0f} MiB in "
              f"{row['save_s']:.2f} s; weights as the first stream's: {row['same_weights_as_first']}")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps({"device": name, "method": ARGS.method, "rows": rows}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--records", required=True)
    parser.add_argument("--method", default="alphaedit")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--depths", nargs="+", default=["all", "1", "0"])
    parser.add_argument("--stats-dir", default="/tmp/smollm2-stats")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
