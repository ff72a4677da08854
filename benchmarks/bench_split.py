"""Models bigger than one GPU, on one GPU and the CPU (issue #36), with random weights in bf16:

- ``compare``: a 7B-shaped LLaMA edited on the GPU alone, then the same weights placed by accelerate
  (``device_map="auto"`` with ``--gpu-memory`` for GPU 0, the rest offloaded to the CPU) and edited again. ROME (one
  request at layer 5) and MEMIT (``--memit-requests`` at layers 4-8) on each placement; the updates are compared
  (largest relative Frobenius difference over the edited weights) with the single-device edit, fast path on and off,
  and timed.
- ``big``: a 30B-shaped LLaMA (hidden 6656, 60 layers, MLP 17920) that does not fit ``--big-gpu-memory``: the
  layers accelerate plans for GPU 0 are made there, the rest in host memory, then dispatched; one ROME edit.
- ``layers``: one 70B-shaped decoder layer (hidden 8192, MLP 28672, 8 key-value heads) on the GPU: the seconds of a
  forward over the statistics pass's batch, of a forward and backward at a ROME value step's size, and of moving the
  layer's weights from host memory (what an offloaded layer costs each forward). docs/big-models.md projects a
  70B plan from these.

Context templates are fixed (no sampling), so each placement edits from the same prompts.
Run: python benchmarks/bench_split.py [compare] [big] [layers] [--gpu-memory 6GiB] [--tiny] [--json FILE]
"""
import argparse
import gc
import json
import tempfile
from pathlib import Path

import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.arch.registry import get_registry
from adapterkit.checkpoints.build import build_model
from adapterkit.checkpoints.placement import dispatch_built, describe_placement, placement_options
from adapterkit.editing import speedups
from adapterkit.evaluation.metrics import target_nll
from bench_7b import LLAMA_7B, TINY, build, environment
from bench_memit_scale import unique_requests
from common import setup, timed

LLAMA_30B = {**LLAMA_7B, "hidden_size": 6656, "intermediate_size": 17920, "num_hidden_layers": 60,
             "num_attention_heads": 52, "num_key_value_heads": 52}
LLAMA_70B = {**LLAMA_7B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
             "num_attention_heads": 64, "num_key_value_heads": 8}
TINY_BIG = {**TINY, "num_hidden_layers": 12}
TEMPLATES = ["{}", "The following is known. {}", "In other news, {}", "It is said that {}", "Here is a fact. {}",
             "As reported, {}"]


def gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 2)


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device):
    return gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def rome_hp(spec, config, steps: int = 25) -> dict:
    return {**method_hparams(spec, config, get_registry().method("ROME"), model_name="bench"), "layers": [5],
            "v_num_grad_steps": steps, "context_templates": TEMPLATES, "mom2_adjustment": False}


def memit_hp(spec, config, records, scratch: Path) -> dict:
    corpus = scratch / "corpus.txt"
    corpus.write_text("\n".join(r["prompt"] + " " + r["ground_truth"] for r in records) + "\n")
    return {**method_hparams(spec, config, get_registry().method("MEMIT"), model_name="bench"),
            "v_num_grad_steps": 25, "context_templates": TEMPLATES, "mom2_corpus": str(corpus),
            "stats_dir": str(scratch / "stats"), "mom2_dataset": "bench", "mom2_n_samples": 1000}


def edit_once(model, tok, requests, hp, device, *, fast: bool = True) -> dict:
    """One timed edit, undone after; its deltas (CPU, float32), seconds, peak memory and target NLL after."""
    peak_reset(device)
    with speedups.enabled(fast):
        seconds, result = timed(lambda: adapterkit.edit(model, tok, requests, hp, evaluate=False), device)
    nll = target_nll(model, tok, [r["prompt"] for r in requests[:8]], [" " + r["target_new"] for r in requests[:8]])
    deltas = {name: delta.float().clone() for name, delta in result.deltas.items()}
    result.restore()
    return {"seconds": seconds, "deltas": deltas, "peak_gib": peak(device), "target_nll_after": sum(nll) / len(nll)}


def difference(a: dict, b: dict) -> float:
    """Largest relative Frobenius difference between two edits' deltas, over the weights they changed."""
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)) for n in a)


def summary(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "deltas"}


def compare(device, tok, records, scratch: Path) -> dict:
    config = TINY if ARGS.tiny else LLAMA_7B
    model, spec = build(config, torch.bfloat16, device)
    rome = rome_hp(spec, config)
    memit = memit_hp(spec, config, records, scratch)
    rome_requests = [r for r in records if r["subject"] in r["prompt"]][:2]
    memit_requests = unique_requests(records, ARGS.memit_requests)
    adapterkit.edit(model, tok, rome_requests[:1], rome, evaluate=False).restore()            # warm-up
    adapterkit.edit(model, tok, memit_requests[:4], memit, evaluate=False).restore()          # statistics, warm-up
    runs = {}
    for label, fast in (("fast", True), ("plain", False)):
        runs[f"rome_one_device_{label}"] = edit_once(model, tok, rome_requests[1:], rome, device, fast=fast)
        runs[f"memit_one_device_{label}"] = edit_once(model, tok, memit_requests, memit, device, fast=fast)
    one_device_peak = {k: v["peak_gib"] for k, v in runs.items()}
    model.to("cpu")
    gc.collect()
    torch.cuda.empty_cache() if device.type == "cuda" else None
    gpu_memory = ARGS.gpu_memory if device.type == "cuda" else None
    max_memory = {0: gpu_memory, "cpu": "200GiB"} if gpu_memory else {"cpu": "200GiB"}
    placing, model = timed(lambda: dispatch_built(model, placement_options(device_map="auto", max_memory=max_memory)),
                           device)
    placement = model.hf_device_map
    on_gpu = sorted(k for k, v in placement.items() if v not in ("cpu", "disk"))
    print(f"placed in {placing:.1f} s with max_memory {max_memory}: {describe_placement(model)}; on the GPU: "
          f"{', '.join(on_gpu[:3])}{' ...' if len(on_gpu) > 3 else ''} ({len(on_gpu)} entries)")
    adapterkit.edit(model, tok, rome_requests[:1], rome, evaluate=False).restore()            # warm-up
    runs["rome_split"] = edit_once(model, tok, rome_requests[1:], rome, device)
    runs["memit_split"] = edit_once(model, tok, memit_requests, memit, device)
    out = {"shape": {k: config[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size")},
           "max_memory": {str(k): v for k, v in max_memory.items()}, "placement": describe_placement(model),
           "placing_seconds": placing, "runs": {k: summary(v) for k, v in runs.items()}, "one_device_peak": one_device_peak}
    for method in ("rome", "memit"):
        for label in ("fast", "plain"):
            out[f"{method}_split_vs_one_device_{label}"] = difference(runs[f"{method}_split"]["deltas"],
                                                                       runs[f"{method}_one_device_{label}"]["deltas"])
        out[f"{method}_one_device_fast_vs_plain"] = difference(runs[f"{method}_one_device_fast"]["deltas"],
                                                                runs[f"{method}_one_device_plain"]["deltas"])
        print(f"{method.upper()}: one device {runs[f'{method}_one_device_fast']['seconds']:.2f} s (fast path), "
              f"{runs[f'{method}_one_device_plain']['seconds']:.2f} s (plain); split "
              f"{runs[f'{method}_split']['seconds']:.2f} s, peak {runs[f'{method}_split']['peak_gib']} GiB; update vs "
              f"one device: {out[f'{method}_split_vs_one_device_plain']:.2e} (plain), "
              f"{out[f'{method}_split_vs_one_device_fast']:.2e} (fast); one device fast vs plain "
              f"{out[f'{method}_one_device_fast_vs_plain']:.2e}; target NLL after: one device "
              f"{runs[f'{method}_one_device_plain']['target_nll_after']:.3f}, split {runs[f'{method}_split']['target_nll_after']:.3f}")
    del model
    gc.collect()
    torch.cuda.empty_cache() if device.type == "cuda" else None
    return out


def materialised(config, max_memory, device) -> torch.nn.Module:
    """A model too big to build in one place: planned on the meta device, each part made where the plan puts it
    (uniform random weights, norms at one), then dispatched by accelerate."""
    from accelerate import infer_auto_device_map

    spec = get_registry().architecture("llama")
    with torch.device("meta"):
        model = build_model(config, spec, dtype=torch.bfloat16)
    plan = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=model._no_split_modules,
                                 dtype=torch.bfloat16)
    for name, where in plan.items():
        target = torch.device("cuda", where) if isinstance(where, int) else torch.device(where)
        (model.get_submodule(name) if name else model).to_empty(device=target)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0) if parameter.dim() == 1 else parameter.uniform_(-0.03, 0.03)
    for name, module in list(model.named_modules()):
        if hasattr(module, "inv_freq"):  # a computed buffer, left empty by to_empty: made again where it lives
            owner, _, short = name.rpartition(".")
            setattr(model.get_submodule(owner), short, type(module)(config=model.config).to(module.inv_freq.device))
    return dispatch_built(model.eval(), {"device_map": plan})


def big(device, tok, records) -> dict:
    config = TINY_BIG if ARGS.tiny else LLAMA_30B
    max_memory = {0: ARGS.big_gpu_memory, "cpu": "110GiB"} if device.type == "cuda" else {"cpu": "110GiB"}
    made, model = timed(lambda: materialised(config, max_memory, device), device)
    weights = sum(p.numel() for p in model.parameters()) * 2
    placement = model.hf_device_map
    offloaded = sorted(k for k, v in placement.items() if v == "cpu")
    print(f"{config['num_hidden_layers']} layers x {config['hidden_size']} ({gib(weights)} GiB of bf16 weights) made "
          f"and placed in {made:.1f} s: {describe_placement(model)}; offloaded to the CPU: {len(offloaded)} entries "
          f"({', '.join(offloaded[:2])} ...)")
    spec = get_registry().architecture("llama")
    hp = rome_hp(spec, config, steps=ARGS.big_steps)
    request = [r for r in records if r["subject"] in r["prompt"]][:1]
    before = target_nll(model, tok, [request[0]["prompt"]], [" " + request[0]["target_new"]])[0]
    run = edit_once(model, tok, request, hp, device)
    print(f"ROME on the {gib(weights)} GiB model: {run['seconds']:.1f} s for {ARGS.big_steps} value steps, GPU peak "
          f"{run['peak_gib']} GiB, target NLL {before:.3f} -> {run['target_nll_after']:.3f}")
    return {"shape": {k: config[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size")},
            "weights_gib": gib(weights), "max_memory": {str(k): v for k, v in max_memory.items()},
            "placement": describe_placement(model), "made_and_placed_seconds": made, "value_steps": ARGS.big_steps,
            "target_nll_before": before, **summary(run)}


def layers(device) -> dict:
    """Per-layer costs of a 70B-shaped decoder layer on this device, at the shapes docs/big-models.md's plan uses:
    F and B, a layer's forward and backward over one value-optimisation batch (11 rows of 20 tokens: 10 context
    templates and the KL row); H, the head and loss over it, forward and backward; a layer's forward over a
    statistics batch (16 x 512 tokens); MEMIT's float64 solve for one layer; moving a layer's weights from host
    memory (what an offloaded layer costs each forward)."""
    config = {**(TINY if ARGS.tiny else LLAMA_70B), "num_hidden_layers": 1}
    spec = get_registry().architecture("llama")
    with torch.device(device):
        model = build_model(config, spec, dtype=torch.bfloat16).eval()
    model.requires_grad_(False)
    layer, rotary, norm, head = model.model.layers[0], model.model.rotary_emb, model.model.norm, model.lm_head
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    rows, length = len(TEMPLATES) * 2 - 1, 20

    def inputs(batch, tokens, grad):
        x = torch.randn(batch, tokens, hidden, device=device, dtype=torch.bfloat16, requires_grad=grad)
        positions = torch.arange(tokens, device=device)[None].expand(batch, -1)
        return x, rotary(x, positions)

    def layer_out(x, position_embeddings):
        out = layer(x, position_embeddings=position_embeddings, attention_mask=None)
        return out[0] if isinstance(out, tuple) else out

    def best(fn, repeats=5):
        fn()
        return min(timed(fn, device)[0] for _ in range(repeats))

    x, rope = inputs(rows, length, True)
    forward = best(lambda: layer_out(x, rope))
    forward_backward = best(lambda: layer_out(x, rope).float().sum().backward())
    labels = torch.randint(0, config["vocab_size"], (rows * length,), device=device)
    head_step = best(lambda: torch.nn.functional.cross_entropy(
        head(norm(x)).float().flatten(0, 1), labels).backward())
    with torch.no_grad():
        stats_x, stats_rope = inputs(16, 512, False)
        stats_forward = best(lambda: layer_out(stats_x, stats_rope))
    system = torch.eye(inner, device=device, dtype=torch.float64) * 2
    right = torch.randn(inner, hidden, device=device, dtype=torch.float64)
    solve = best(lambda: torch.linalg.solve(system, right), repeats=2)
    del system, right
    host = {n: w.detach().cpu() for n, w in layer.named_parameters()}
    pinned = {n: w.pin_memory() for n, w in host.items()} if device.type == "cuda" else host
    layer_bytes = sum(w.numel() * w.element_size() for w in host.values())
    copy_pageable = best(lambda: [w.to(device) for w in host.values()])
    copy_pinned = best(lambda: [w.to(device, non_blocking=True) for w in pinned.values()])
    out = {"layer_gib": gib(layer_bytes), "value_batch": f"{rows} x {length} tokens", "F_s": forward,
           "B_s": forward_backward - forward, "H_s": head_step, "stats_forward_16x512_s": stats_forward,
           "stats_tokens_per_s_per_layer": 16 * 512 / stats_forward, "memit_solve_float64_s": solve,
           "host_to_device_pageable_s": copy_pageable, "host_to_device_pinned_s": copy_pinned,
           "host_to_device_pageable_gb_s": layer_bytes / copy_pageable / 1e9,
           "host_to_device_pinned_gb_s": layer_bytes / copy_pinned / 1e9}
    print("one 70B-shaped layer: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    return out


def main() -> None:
    device, name, _, records, tok = setup()
    results = {"environment": environment(name), "dtype": "bf16"}
    print(f"device: {name}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as scratch:
        for row, job in (("layers", lambda: layers(device)), ("compare", lambda: compare(device, tok, records, Path(scratch))),
                         ("big", lambda: big(device, tok, records))):
            if row in ARGS.rows:
                results[row] = job()
                if ARGS.json:
                    Path(ARGS.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="*", default=["layers", "compare", "big"])
    parser.add_argument("--gpu-memory", default="6GiB", help="GPU 0's share of the 7B-shaped model in `compare`")
    parser.add_argument("--big-gpu-memory", default="48GiB", help="GPU 0's share of the 30B-shaped model in `big`")
    parser.add_argument("--big-steps", type=int, default=10, help="value-optimisation steps of the 30B-shaped edit")
    parser.add_argument("--memit-requests", type=int, default=32)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
