"""Issue #17's last row: MEND and SERAC edit latency on the 7B-shaped LLaMA of bench_7b.py (hidden 4096, 32
layers, MLP 11008, vocabulary 32000, random weights).

Each editor is first trained for ``--train-steps`` optimiser steps (``adapterkit.train`` on the first 100 bundled
CounterFact records, one validation batch at the end; the model stays frozen, only the editor is trained), then
single edits are timed with ``adapterkit.edit``: the first (which reads and checks the archive, and runs the first
kernels) apart, then the median of ``--repeats`` held-out requests, each edit undone outside the timing (later edits
with the same archive reuse the editor the first one read). SERAC changes no weights and its cost moves into answering, so one
answered query (the new target's log-probability through the returned answerer: scope classifier, then the
counterfactual model on in-scope rows) is timed beside the same query through the base model alone.

SERAC's counterfactual model is a small LLaMA with the base's vocabulary (random weights, 12 x 768), as
EasyEdit's llama-7b hparams use (``small_name: llama-160m``); ``--serac-cf copy`` times adapterkit's default
instead, a full copy of the base (at 7B: 13.5 GB more on the device and in the archive, read on every edit, and
about 55 GB of scratch disk under TMPDIR for the trainer's checkpoint with its optimiser state).

The reference figures (MEND about 0.3 s, SERAC about 0.6 s per edit) are those reported for the reference
implementation (EasyEdit), as issue #17 quotes them; they are not measured here. Ratios are measured / reference.
``--tiny`` runs the same on an 8 x 64 model (a 2-layer counterfactual model) to check the script on a CPU.
Run: python benchmarks/bench_editors_7b.py [mend] [serac] [--dtype bf16|fp32] [--train-steps 5] [--repeats 5]
     [--serac-cf small|copy] [--tiny] [--json FILE]
"""
import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.editing.archive import EDITOR_FILE
from adapterkit.arch.registry import get_registry
from bench_7b import DTYPES, LLAMA_7B, TINY, build, environment, target_log_prob
from common import setup, timed

REFERENCE_S = {"MEND": 0.3, "SERAC": 0.6}
LLAMA_160M = {**LLAMA_7B, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "num_key_value_heads": 12, "max_position_embeddings": 2048}
TINY_CF = {**TINY, "num_hidden_layers": 2}
N_TRAIN = 100


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def train_editor(model, tok, hp, records, out_dir: Path, device) -> dict:
    reset_peak(device)
    seconds, done = timed(lambda: adapterkit.train(model, tok, hp, records[:N_TRAIN], out_dir,
                                                   val=records[N_TRAIN: N_TRAIN + hp["val_batch_size"]], progress=False), device)
    return {"steps": done.step, "seconds": seconds, "peak_gib": peak_gib(device),
            "archive_mib": (out_dir / EDITOR_FILE).stat().st_size / 2**20, "validation": done.history[-1]}


def time_edits(model, tok, hp, archive, requests, device, after) -> dict:
    """The first edit's time (it reads the archive) and the median over requests[1:]; ``after(result, request)``
    runs untimed on each edit before it is undone, and what it returns is kept."""
    times, seen = [], []
    for i, request in enumerate(requests):
        if i == 1:
            reset_peak(device)
        seconds, result = timed(lambda: adapterkit.edit(model, tok, [request], hp, evaluate=False, archive=archive), device)
        seen.append(after(result, request))
        result.restore()
        times.append(seconds)
    return {"first_s": times[0], "median_s": statistics.median(times[1:]), "times_s": times[1:],
            "peak_gib": peak_gib(device), "after": seen[1:]}


def describe(name: str, out: dict) -> str:
    ratio = out["median_s"] / REFERENCE_S[name]
    peak = f", peak {out['peak_gib']:.1f} GiB" if out["peak_gib"] is not None else ""
    return (f"{name} one edit: median {out['median_s']:.3f} s over {len(out['times_s'])} "
            f"({', '.join(f'{t:.3f}' for t in out['times_s'])}{peak}); reference {REFERENCE_S[name]} s: x{ratio:.2f}; "
            f"the first edit, reading the archive: {out['first_s']:.3f} s")


def bench_method(name, model, spec, config, tok, records, device, scratch: Path, extra_hp, after, summary) -> dict:
    method = get_registry().method(name)
    steps = ARGS.train_steps
    hp = {**method_hparams(spec, config, method, model_name="llama-7b-shaped"), **extra_hp,
          "max_iters": steps, "val_every": steps, "val_steps": 1}
    out_dir = scratch / name.lower()
    out = {"hparams": hp, "training": train_editor(model, tok, hp, records, out_dir, device)}
    t = out["training"]
    peak = f", peak {t['peak_gib']:.1f} GiB" if t["peak_gib"] is not None else ""
    print(f"{name} editor trained {t['steps']} steps in {t['seconds']:.1f} s (archive {t['archive_mib']:.0f} MiB{peak}); "
          f"{hp['early_stop_key']} {t['validation'][hp['early_stop_key']]:.3f}")
    requests = [r for r in records[N_TRAIN:] if r["subject"] in r["prompt"]][: ARGS.repeats + 1]
    archive = out_dir / EDITOR_FILE
    out["edit"] = time_edits(model, tok, hp, archive, requests, device, after)
    print(describe(name, out["edit"]))
    summary(out, requests)
    return out


def bench_mend(model, spec, config, tok, records, device, scratch: Path) -> dict:
    def after(result, request):
        return target_log_prob(model, tok, request)

    def summary(out, requests):
        before = statistics.mean(target_log_prob(model, tok, r) for r in requests[1:])
        out["target_log_prob_before"] = before
        print(f"MEND target log-prob before {before:.3f}, after {statistics.mean(out['edit']['after']):.3f} "
              f"(random weights, {ARGS.train_steps} training steps: cost, not quality)")
    return bench_method("MEND", model, spec, config, tok, records, device, scratch, {}, after, summary)


def bench_serac(model, spec, config, tok, records, device, scratch: Path) -> dict:
    extra = {}
    if ARGS.serac_cf == "small":
        cf_dir = scratch / "serac-counterfactual"
        build(TINY_CF if ARGS.tiny else LLAMA_160M, torch.float32, "cpu")[0].save_pretrained(cf_dir)
        extra["small_name"] = str(cf_dir)

    def after(result, request):
        seconds, log_prob = timed(lambda: target_log_prob(result.answerer, tok, request), device)
        base_s, _ = timed(lambda: target_log_prob(model, tok, request), device)
        ids = torch.tensor([tok(request["prompt"])["input_ids"] + tok(" " + request["target_new"])["input_ids"]], device=device)
        with torch.no_grad():
            in_scope = bool(result.answerer(input_ids=ids).in_scope.all())
        return {"answer_s": seconds, "base_forward_s": base_s, "in_scope": in_scope, "log_prob": log_prob}

    def summary(out, requests):
        seen = out["edit"]["after"]
        answer, base = (statistics.median(s[k] for s in seen) for k in ("answer_s", "base_forward_s"))
        out["answer"] = {"median_s": answer, "base_forward_median_s": base, "in_scope": sum(s["in_scope"] for s in seen),
                         "queries": len(seen)}
        print(f"SERAC answer latency: one query (prompt + new target) through the answerer, median {answer:.3f} s; "
              f"the base model alone {base:.3f} s (x{answer / base:.2f}); {out['answer']['in_scope']} of {len(seen)} "
              f"queries routed to the counterfactual model")
    return bench_method("SERAC", model, spec, config, tok, records, device, scratch, extra, after, summary)


def main() -> None:
    import transformers
    transformers.utils.logging.disable_progress_bar()  # SERAC reads its counterfactual model on every edit
    device, name, _, records, tok = setup()
    config = TINY if ARGS.tiny else LLAMA_7B
    model, spec = build(config, DTYPES[ARGS.dtype], device)
    shape = {k: config[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")}
    results = {"environment": environment(name), "dtype": ARGS.dtype, "shape": shape, "train_steps": ARGS.train_steps,
               "serac_counterfactual": ARGS.serac_cf, "reference_s": REFERENCE_S,
               "reference_source": "reported for EasyEdit (issue #17), not measured here"}
    env = results["environment"]
    print(f"device: {name}; torch {env['torch']}; transformers {env['transformers']}; {ARGS.dtype}; "
          f"{config['num_hidden_layers']} layers x {config['hidden_size']} (MLP {config['intermediate_size']}, "
          f"vocabulary {config['vocab_size']}); editors trained {ARGS.train_steps} steps; "
          f"reference (EasyEdit, reported, not measured here): MEND {REFERENCE_S['MEND']} s, SERAC {REFERENCE_S['SERAC']} s per edit")
    with tempfile.TemporaryDirectory() as scratch:
        if "mend" in ARGS.rows:
            results["mend"] = bench_mend(model, spec, config, tok, records, device, Path(scratch))
        if "serac" in ARGS.rows:
            results["serac"] = bench_serac(model, spec, config, tok, records, device, Path(scratch))
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="*", default=["mend", "serac"])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serac-cf", choices=("small", "copy"), default="small")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
