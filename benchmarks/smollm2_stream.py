"""A stream of CounterFact edits on SmolLM2-135M-Instruct through ``adapterkit.EditStream``: batches applied one on
top of the last, never undone. One JSON line per batch (``"kind": "batch"``): the seconds of the edit and of the
stream's bookkeeping (ledger and carried keys), the GPU memory after it, and the newest batch's new-target
probability per token (teacher-forced) before and after its edit. Every ``--every`` edits a curve line
(``"kind": "curve"``): every edit so far measured again (retained teacher-forced rewrite and rephrase accuracy,
greedy answers that begin with the new target), locality on known facts the stream does not edit
(teacher-forced predictions of their true answers unchanged, greedy answers unchanged) and held-out perplexity.
benchmarks/RESULTS.md ("Streams on SmolLM2-135M-Instruct") holds what this printed on the GPU.

The stream keeps no batch undoable (``undo_depth=0``: a batch's deltas are 35 MB here, in float64, so a
thousand would fill the memory); what it carries across batches is kept. With ``--checkpoint DIR`` a run stopped
by ``--max-seconds`` saves the stream in DIR (``EditStream.save``), and a run started with the same DIR loads it and
goes on from there (a ``"kind": "resumed"`` line): a stream longer than one GPU call runs over several.

Run: python benchmarks/smollm2_stream.py MODEL_DIR --method memit --batch 1 --n 1000 --every 100 \\
         --records counterfact.json --out stream.jsonl [--max-seconds 540] [--checkpoint DIR] [--set KEY=VALUE ...]
"""
import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import yaml

import adapterkit
from adapterkit.checkpoints.loading import load_model
from adapterkit.editing.metrics import target_predictions, token_accuracy, unchanged_share
from adapterkit.evaluation.generation import greedy_generate
from adapterkit.evaluation.heldout import default_texts
from adapterkit.evaluation.metrics import normalise_answer, perplexity, starts_with, target_nll

from common import TimedBookkeeping
from smollm2_batches import TESTS_DATA, detected_hparams, emitter


def answers(model, tok, prompts):
    return [g.text for g in greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=64)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--method", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--records", required=True, help="flat CounterFact records (prompt, target_new, ground_truth, "
                                                         "rephrase_prompt, subject)")
    parser.add_argument("--known", type=int, default=200, help="known facts measured for locality")
    parser.add_argument("--corpus", default=str(TESTS_DATA / "smollm2_stats_corpus.txt"))
    parser.add_argument("--stats-dir", default="/tmp/smollm2-stats")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE (YAML) over detect's settings")
    parser.add_argument("--max-seconds", type=float, default=float("inf"), help="stop after the batch that passes it")
    parser.add_argument("--checkpoint", help="folder where a stopped run saves its stream, and a run resumes from")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(args.model, dtype="float32")
    model = model.to(device)
    hparams = detected_hparams(args.model, args.method.upper(), args.corpus, args.stats_dir)
    hparams.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    records = json.loads(Path(args.records).read_text())[: args.n]
    edited_ids = {r.get("case_id") for r in records}
    known = [r for r in json.loads((TESTS_DATA / "smollm2_known_counterfact.json").read_text())["records"]
             if r.get("case_id") not in edited_ids][: args.known]
    known_prompts, known_truths = [r["prompt"] for r in known], [" " + r["ground_truth"] for r in known]
    heldout = default_texts()
    emit = emitter(args.out)

    base_predictions = [p for p, _ in target_predictions(model, tok, known_prompts, known_truths)]
    base_answers = [normalise_answer(a) for a in answers(model, tok, known_prompts)]
    base_perplexity = perplexity(model, tok, heldout)
    resumed_at = 0
    if args.checkpoint and os.path.exists(os.path.join(args.checkpoint, "manifest.json")):
        stream = adapterkit.EditStream.load(args.checkpoint, model, tok, hparams, keep_in_memory=True)
        resumed_at = sum(stream.requests_per_batch)
    else:
        stream = adapterkit.EditStream(model, tok, hparams, undo_depth=0)
    bookkeeping = TimedBookkeeping(stream)
    emit({"kind": "start", "method": args.method, "batch": args.batch, "n": len(records), "device": device,
          "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "settings": stream.hparams,
          "carries_state": stream.carries_state, "known_facts": len(known), "perplexity": base_perplexity})
    if resumed_at:
        emit({"kind": "resumed", "edits": resumed_at, "checkpoint": args.checkpoint})
    started, mark = time.perf_counter(), (resumed_at // args.every + 1) * args.every
    for lo in range(resumed_at, len(records), args.batch):
        batch = records[lo: lo + args.batch]
        prompts, targets = [r["prompt"] for r in batch], [" " + r["target_new"] for r in batch]
        prob_before = [math.exp(-v) for v in target_nll(model, tok, prompts, targets)]
        booked = bookkeeping.seconds
        bookkeeping.synchronise()
        t0 = time.perf_counter()
        stream.apply(batch)
        bookkeeping.synchronise()
        seconds = time.perf_counter() - t0
        prob_after = [math.exp(-v) for v in target_nll(model, tok, prompts, targets)]
        done = lo + len(batch)
        emit({"kind": "batch", "edits": done, "seconds": round(seconds, 3),
              "bookkeeping_seconds": round(bookkeeping.seconds - booked, 4),
              "gpu_memory_gib": round(torch.cuda.memory_allocated() / 2**30, 3) if device == "cuda" else None,
              "new_token_prob_before": sum(prob_before) / len(batch), "new_token_prob_after": sum(prob_after) / len(batch),
              "rewrite_acc": sum(token_accuracy(model, tok, prompts, targets)) / len(batch)})
        if done >= mark or done == len(records) or time.perf_counter() - started > args.max_seconds:
            mark = (done // args.every + 1) * args.every
            so_far = records[:done]
            edited_prompts, edited_targets = [r["prompt"] for r in so_far], [" " + r["target_new"] for r in so_far]
            rephrased = [(r["rephrase_prompt"], " " + r["target_new"]) for r in so_far if r.get("rephrase_prompt")]
            now_predictions = [p for p, _ in target_predictions(model, tok, known_prompts, known_truths)]
            now_answers = [normalise_answer(a) for a in answers(model, tok, known_prompts)]
            emit({"kind": "curve", "edits": done, "seconds_so_far": round(time.perf_counter() - started, 1),
                  "teacher_forced.rewrite_acc": sum(token_accuracy(model, tok, edited_prompts, edited_targets)) / done,
                  "teacher_forced.rephrase_acc": (sum(token_accuracy(model, tok, *zip(*rephrased))) / len(rephrased)
                                                  if rephrased else None),
                  "greedy.rewrite_starts_with": sum(starts_with(a, t) for a, t in zip(
                      answers(model, tok, edited_prompts), edited_targets)) / done,
                  "known_facts.teacher_forced_unchanged": unchanged_share(base_predictions, now_predictions),
                  "known_facts.greedy_unchanged": sum(a == b for a, b in zip(base_answers, now_answers)) / len(known),
                  "perplexity": perplexity(model, tok, heldout), "perplexity_before": base_perplexity})
            if time.perf_counter() - started > args.max_seconds:
                if args.checkpoint:
                    stream.save(args.checkpoint)
                emit({"kind": "stopped", "edits": done, "reason": f"--max-seconds {args.max_seconds} passed",
                      "checkpoint": args.checkpoint})
                break
    else:
        emit({"kind": "finished", "edits": len(records)})


if __name__ == "__main__":
    main()
