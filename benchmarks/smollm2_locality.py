"""Where MEMIT's locality losses on SmolLM2-135M-Instruct come from: for each batch of 50 known CounterFact facts
edited in one call, every locality prompt of the selection (442) is read before and after, split into the batch's
own neighbours and bystanders (the other records' locality prompts, which no edit of the batch was meant to
touch), with the pre-edit margin (top-1 minus top-2 log-probability) of each changed prediction and whether it
changed to an edited target. ``--single`` also edits the first batch's records one at a time (restored between).
``--method AlphaEdit`` edits with AlphaEdit (or any locate-then-edit method) and the settings `detect` writes for it.

Run: python benchmarks/smollm2_locality.py MODEL.gguf --batches 0:50 100:150 --setting default= [--single]
         [--method AlphaEdit] [--out F]
Settings as in smollm2_batches.py (NAME=KEY=VALUE[,KEY=VALUE...]).
"""
import argparse
import json
import statistics
import time

import torch

import adapterkit
from adapterkit.checkpoints.loading import load_model
from adapterkit.editing.metrics import encode_pairs, summarise
from adapterkit.editing.tokens import model_device, token_ids

from smollm2_batches import TESTS_DATA, detected_hparams, emitter, parse_setting


@torch.no_grad()
def read_predictions(model, tok, prompts, targets, batch_size: int = 64):
    """Per pair: predicted ids at the target positions (teacher-forced) and the first position's margin."""
    out = []
    for lo in range(0, len(prompts), batch_size):
        ids, mask, spans = encode_pairs(tok, prompts[lo: lo + batch_size], targets[lo: lo + batch_size])
        device = model_device(model)
        logprobs = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
        for row, (start, stop) in enumerate(spans):
            first = logprobs[row, start - 1]
            top = first.topk(2).values
            out.append((logprobs[row, start - 1: stop - 1].argmax(-1).tolist(), float(top[0] - top[1])))
    return out


def changed(before, after) -> list[bool]:
    return [b[0] != a[0] for b, a in zip(before, after)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batches", nargs="+", default=["0:50"])
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--single", action="store_true")
    parser.add_argument("--method", default="MEMIT")
    parser.add_argument("--corpus", default=str(TESTS_DATA / "smollm2_stats_corpus.txt"))
    parser.add_argument("--stats-dir", default="/tmp/smollm2-stats")
    parser.add_argument("--out")
    args = parser.parse_args()
    model, tok = load_model(args.model, dtype="float32")
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    records = json.loads((TESTS_DATA / "smollm2_known_counterfact.json").read_text())["records"]
    base = detected_hparams(args.model, args.method, args.corpus, args.stats_dir)
    prompts = [r["locality_prompt"] for r in records]
    targets = [r["locality_ground_truth"] for r in records]
    before = read_predictions(model, tok, prompts, targets)
    new_first = [token_ids(tok, " " + r["target_new"])[0] for r in records]
    emit = emitter(args.out)
    for batch in args.batches:
        lo, hi = map(int, batch.split(":"))
        for name, changes in map(parse_setting, args.setting or ["default="]):
            started = time.perf_counter()
            result = adapterkit.edit(model, tok, records[lo:hi], {**base, **changes})
            after = read_predictions(model, tok, prompts, targets)
            result.restore()
            flips = changed(before, after)
            own = range(lo, hi)
            others = [i for i in range(len(records)) if not lo <= i < hi]
            edited_firsts = set(new_first[lo:hi])
            emit({"method": args.method, "setting": name, "changes": changes, "records": [lo, hi],
                  **{k: round(v, 3) for k, v in summarise(result.metrics).items() if v is not None},
                  "own_changed": sum(flips[i] for i in own), "own": len(own),
                  "bystanders_changed": sum(flips[i] for i in others), "bystanders": len(others),
                  "own_to_own_target": sum(flips[i] and after[i][0][0] == new_first[i] for i in own),
                  "changed_to_a_batch_target": sum(flips[i] and after[i][0][0] in edited_firsts for i in range(len(records))),
                  "margin_changed": [round(before[i][1], 2) for i in range(len(records)) if flips[i]],
                  "s": round(time.perf_counter() - started, 1)})
    if args.single:
        lo, hi = map(int, args.batches[0].split(":"))
        for name, changes in map(parse_setting, args.setting or ["default="]):
            own_flips = []
            for i in range(lo, hi):
                result = adapterkit.edit(model, tok, [records[i]], {**base, **changes})
                own_flips.append(changed([before[i]], read_predictions(model, tok, [prompts[i]], [targets[i]]))[0])
                result.restore()
            emit({"method": args.method, "setting": name, "single_edits": [lo, hi], "own_changed": sum(own_flips),
                  "which": [lo + k for k, f in enumerate(own_flips) if f]})
    print("median margin of all locality prompts before:", round(statistics.median(b[1] for b in before), 2))


if __name__ == "__main__":
    main()
