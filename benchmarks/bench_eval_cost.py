"""What `adapterkit eval` adds to each ROME edit on a 7B-shaped LLaMA (bench_7b.py's shape, random weights): the
edit's own seconds beside the measurement's, per request, as a single-edit run does them:

- before the edits, every metric of a window of requests in one pass (the run measures ``BEFORE_WINDOW`` requests
  together on the unedited weights), counted per request;
- after each edit, every metric of its request (teacher-forced accuracies, the probability comparisons, greedy
  answers of up to 32 new tokens for the rewrite, one rephrasing and one locality prompt, batched) and the
  held-out perplexity.

Twice: decoding step by step (the default), then through the static cache with the forward compiled (``eval
--compile``); the compile is timed apart, as a run pays it once. Random weights never stop a generation early, so
every answer runs the whole 32 tokens: the measurement's worst case. No statistics (``mom2_adjustment: false``):
they are read once per run, not per edit. Target (the evaluation issue's): measurement <= the edit's time.
Run: python benchmarks/bench_eval_cost.py [--edits 8] [--dtype bf16|fp32] [--decoding step_by_step compiled]
     [--tiny] [--json FILE]
"""
import argparse
import json
import statistics
from pathlib import Path

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.arch.registry import get_registry
from adapterkit.evaluation.generation import decodes_through_static_cache
from adapterkit.evaluation.heldout import default_texts
from adapterkit.evaluation.measure import MeasureSettings, observe
from adapterkit.evaluation.metrics import perplexity
from adapterkit.evaluation.run import BEFORE_WINDOW
from adapterkit.requests import normalise_requests
from bench_7b import DTYPES, LLAMA_7B, TINY, build, environment
from common import setup, timed


def one_prompt_each(records) -> list[dict]:
    """Records with one rephrasing and one locality prompt, as the issue's cost is stated."""
    out = []
    for r in records:
        if r["subject"] in r["prompt"] and r.get("rephrase_prompt") and r.get("locality_prompt"):
            out.append({k: r[k] for k in ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
                                          "locality_prompt", "locality_ground_truth")})
    return out


def answers(observed) -> list:
    return [o["generations"] for o in observed]


def measured_run(model, tok, records, hp, settings, heldout, device) -> dict:
    requests = normalise_requests(records)
    before_s, before = timed(lambda: observe(model, tok, requests, settings), device)
    rows, after_answers = [], []
    for record, request in zip(records, requests):
        edit_s, result = timed(lambda: adapterkit.edit(model, tok, [record], hp, evaluate=False), device)
        after_s, after = timed(lambda: observe(model, tok, [request], settings), device)
        perplexity_s, _ = timed(lambda: perplexity(model, tok, heldout), device)
        result.restore()
        after_answers += answers(after)
        rows.append({"edit_s": edit_s, "after_s": after_s, "perplexity_s": perplexity_s})
        print(json.dumps(rows[-1]), flush=True)
    per_request_before = before_s / len(records)
    edit = statistics.median(r["edit_s"] for r in rows)
    measure = per_request_before + statistics.median(r["after_s"] + r["perplexity_s"] for r in rows)
    return {"before_window_s": before_s, "before_per_request_s": per_request_before, "median_edit_s": edit,
            "median_measure_s": measure, "measure_over_edit": measure / edit, "rows": rows,
            "answers": {"before": answers(before), "after": after_answers}}


def main() -> None:
    device, name, _, records, tok = setup()
    config = TINY if ARGS.tiny else LLAMA_7B
    model, spec = build(config, DTYPES[ARGS.dtype], device)
    hp = {**method_hparams(spec, config, get_registry().method("ROME"), model_name="llama-7b-shaped"),
          "layers": [5], "v_num_grad_steps": 25, "mom2_adjustment": False}
    chosen = one_prompt_each(records)[: ARGS.edits + 1]
    warm_up, chosen = chosen[0], chosen[1:]
    heldout = default_texts()
    adapterkit.edit(model, tok, [warm_up], hp, evaluate=False).restore()  # templates, captured steps
    summary = {"environment": environment(name), "dtype": ARGS.dtype, "layers": config["num_hidden_layers"],
               "hidden_size": config["hidden_size"], "edits": len(chosen), "window": len(chosen),
               "run_window": BEFORE_WINDOW}
    for engine, compiled in (("step_by_step", False), ("compiled", True)):
        if engine not in ARGS.decoding or compiled and not decodes_through_static_cache(model):
            continue
        settings = MeasureSettings(max_new_tokens=32, compile_generation=compiled)
        warm_s, _ = timed(lambda: (observe(model, tok, normalise_requests(chosen), settings),
                                   observe(model, tok, normalise_requests([warm_up]), settings)), device)
        result = measured_run(model, tok, chosen, hp, settings, heldout, device)
        summary[engine] = {"warm_up_s": warm_s, **result}
        print(f"{name}, {ARGS.dtype}, {config['num_hidden_layers']} x {config['hidden_size']}, {engine}: ROME edit "
              f"median {result['median_edit_s']:.3f} s; measurement per edit {result['median_measure_s']:.3f} s "
              f"(before {result['before_per_request_s']:.3f} of a {len(chosen)}-request window, after + perplexity "
              f"the rest): {result['measure_over_edit']:.2f} x the edit (target <= 1); warm-up {warm_s:.1f} s",
              flush=True)
    if "compiled" in summary and "step_by_step" in summary:
        pairs = [(a, b) for when in ("before", "after") for a, b in zip(summary["step_by_step"]["answers"][when],
                                                                       summary["compiled"]["answers"][when])]
        summary["compiled_answers_equal"] = sum(a == b for a, b in pairs) / len(pairs)
        print(f"compiled answers equal to step-by-step ones: {summary['compiled_answers_equal']:.2f} of requests")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
