"""MEMIT with thousands of edits in one `adapterkit.edit` call, on a GPT-2 XL-shaped model: wall time and peak
accelerator memory against the model's own footprint.

The weights are random (no hub here), so this measures cost, not quality. Requests are unique
(subject, relation) pairs: each bundled CounterFact subject put into every other record's prompt.
Statistics come from a short corpus of the records' sentences, computed in an untimed warm-up call.
Prints the device, absolute figures and per-request ratios.
Run: python benchmarks/bench_memit_scale.py [n_requests ...] [--v-batch-size N] [--tiny]
(--tiny: a 4 x 64 model, to check the script on a CPU)
"""
import argparse
import tempfile
from pathlib import Path

import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.checkpoints.build import build_model
from adapterkit.demo.facts import record_texts
from adapterkit.arch.registry import get_registry
from common import GPT2_XL, setup, timed

TINY = {**GPT2_XL, "n_layer": 4, "n_embd": 64, "n_head": 4, "vocab_size": 2048}


def unique_requests(records, n):
    """n distinct (subject, relation) requests: record a's subject in record b's prompt, with b's new target."""
    out = []
    for b in records:
        for a in records:
            if len(out) == n:
                return out
            if a is not b and b["subject"] in b["prompt"]:
                out.append({"prompt": b["prompt"].replace(b["subject"], a["subject"]), "subject": a["subject"],
                            "target_new": b["target_new"]})
    raise ValueError(f"only {len(out)} unique requests can be built from {len(records)} records")


def peak_memory(device, model_gib: float) -> str:
    if device.type != "cuda":
        return "peak memory not measured on CPU"
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    return f"peak memory {peak:.2f} GiB = model + {peak - model_gib:.2f} GiB"


def main(sizes, v_batch_size: int, tiny: bool) -> None:
    config = TINY if tiny else GPT2_XL
    device, name, spec, records, tok = setup()
    model = build_model({**config, "vocab_size": max(config["vocab_size"], len(tok))}, spec).to(device).eval()
    model_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.txt"
        corpus.write_text("\n".join(record_texts(records) * 20) + "\n")
        hp = {**method_hparams(spec, config, get_registry().method("MEMIT"), model_name="gpt2-xl-shaped"),
              "mom2_corpus": str(corpus), "stats_dir": str(Path(scratch) / "stats"), "mom2_dataset": "bench",
              "mom2_n_samples": 2000, "v_batch_size": v_batch_size}
        print(f"device: {name}; {config['n_layer']} x {config['n_embd']} (random weights, {model_gib:.2f} GiB fp32), "
              f"MEMIT layers {hp['layers']}, {hp['v_num_grad_steps']} value steps, v_batch_size {hp['v_batch_size']}")
        adapterkit.edit(model, tok, unique_requests(records, 4), hp, evaluate=False).restore()  # statistics, warm-up
        for n in sizes:
            requests = unique_requests(records, n)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, result = timed(lambda: adapterkit.edit(model, tok, requests, hp, evaluate=False), device)
            print(f"{n:6d} edits in one call: {seconds:8.1f} s ({seconds / n * 1e3:.0f} ms/edit), "
                  f"{peak_memory(device, model_gib)}, {len(result.touched)} weights changed", flush=True)
            result.restore()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[256, 1024, 2048])
    parser.add_argument("--v-batch-size", type=int, default=64, help="requests per value-optimisation batch")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    main(args.sizes, args.v_batch_size, args.tiny)
