"""What `adapterkit eval` adds to each ROME edit on a 7B-shaped LLaMA (bench_7b.py's shape, random weights): the
edit's own seconds beside the measurement's, per request, as the run does them (every metric before the edit and
after it: teacher-forced accuracies, the probability comparisons, and greedy answers of up to 32 new tokens for the
rewrite, one rephrasing and one locality prompt, batched). Random weights never stop a generation early, so every
answer runs the whole 32 tokens: the measurement's worst case. No statistics (``mom2_adjustment: false``): the
statistics are read once per run, not per edit. Target (the evaluation issue's): measurement <= the edit's time.
Run: python benchmarks/bench_eval_cost.py [--edits 5] [--dtype bf16|fp32] [--tiny] [--json FILE]
"""
import argparse
import json
import statistics
from pathlib import Path

import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.arch.registry import get_registry
from adapterkit.evaluation.measure import MeasureSettings, observe
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


def main() -> None:
    device, name, _, records, tok = setup()
    config = TINY if ARGS.tiny else LLAMA_7B
    model, spec = build(config, DTYPES[ARGS.dtype], device)
    hp = {**method_hparams(spec, config, get_registry().method("ROME"), model_name="llama-7b-shaped"),
          "layers": [5], "v_num_grad_steps": 25, "mom2_adjustment": False}
    chosen = one_prompt_each(records)[: ARGS.edits + 1]
    settings = MeasureSettings(max_new_tokens=32)
    adapterkit.edit(model, tok, chosen[:1], hp, evaluate=False).restore()  # warm-up: templates, captured steps
    observe(model, tok, normalise_requests(chosen[:1]), settings)
    rows = []
    for record in chosen[1:]:
        request = normalise_requests([record])
        before_s, _ = timed(lambda: observe(model, tok, request, settings), device)
        edit_s, result = timed(lambda: adapterkit.edit(model, tok, [record], hp, evaluate=False), device)
        after_s, _ = timed(lambda: observe(model, tok, request, settings), device)
        result.restore()
        rows.append({"edit_s": edit_s, "measure_before_s": before_s, "measure_after_s": after_s})
        print(json.dumps(rows[-1]), flush=True)
    edit = statistics.median(r["edit_s"] for r in rows)
    measure = statistics.median(r["measure_before_s"] + r["measure_after_s"] for r in rows)
    summary = {"environment": environment(name), "dtype": ARGS.dtype, "layers": config["num_hidden_layers"],
               "hidden_size": config["hidden_size"], "edits": len(rows), "median_edit_s": edit,
               "median_measure_s": measure, "measure_over_edit": measure / edit, "rows": rows}
    print(f"{name}, {ARGS.dtype}, {config['num_hidden_layers']} x {config['hidden_size']}: ROME edit median {edit:.3f} s, "
          f"eval's measurement before + after median {measure:.3f} s: {measure / edit:.2f} x the edit (target <= 1)")
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
