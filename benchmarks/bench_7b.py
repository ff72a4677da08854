"""Issue #17's three rows on a 7B-shaped LLaMA (hidden 4096, 32 layers, MLP 11008, vocabulary 32000, random
weights): one ROME edit at layer 5, MEMIT's per-request cost in one call, and the second-moment statistics pass
against a plain forward truncated at the same layer.

Random weights would let early stopping cut steps short on some requests and not others, so it is switched off
here: every request runs all ``v_num_grad_steps`` and the steps run are printed. Each figure is printed with the
device and versions and written to ``--json``. ``--tiny`` runs the same on a 4 x 64 model (to check the script on
a CPU). ``--baseline`` switches off the exact speed-ups (``adapterkit.editing.speedups``) to time the straightforward
path in the same run, and prints the target log-probability after the edit for both; ``--whole-rows`` also times
the fast path without the split at the looked-up token (``adapterkit/editing/prefix.py``), ``--capture-each-edit``
without keeping captured steps across edits (``adapterkit/editing/graphs.py``).
Run: python benchmarks/bench_7b.py [rome] [memit] [stats] [--dtype bf16|fp32] [--memit-requests 256] [--json FILE]
"""
import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path

import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.checkpoints.build import build_model
from adapterkit.editing import graphs, speedups, stats, values
from adapterkit.editing.hooks import frozen, run, trace
from adapterkit.editing.stats import compute_stats
from adapterkit.editing.tokens import pad_id, pad_rows
from adapterkit.settings.hparams import load_settings
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from bench_memit_scale import unique_requests
from common import setup, synchronise, timed

LLAMA_7B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
TINY = {**LLAMA_7B, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 8, "num_attention_heads": 4,
        "num_key_value_heads": 4}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def environment(device_name: str) -> dict:
    import transformers
    return {"device": device_name, "torch": torch.__version__, "transformers": transformers.__version__}


def build(config, dtype, device):
    spec = get_registry().architecture("llama")
    with torch.device(device):
        model = build_model(config, spec, dtype=dtype)
    return model.eval(), spec


class StepCounter:
    """Counts value-optimisation steps with early stopping switched off: loss evaluations on the eager paths,
    calls of the captured step on the CUDA-graph path (whose replays run no Python). The straightforward path
    evaluates the loss once more than it updates (the last loss only decides whether to stop); the fast path
    skips that forward. Also counts the captured steps that were kept from an earlier edit and reused."""

    def __enter__(self):
        self.steps, self.reused, self.captures, self._stop = 0, 0, 0, values.STOP_LOSS
        self._losses, self._graphed = values._request_losses, graphs.ReplayedStep.__call__
        self._init = graphs.ReplayedStep.__init__
        values.STOP_LOSS = float("-inf")
        inside_graphed = []

        def counted_losses(*args, **kwargs):
            self.steps += not inside_graphed
            return self._losses(*args, **kwargs)

        def counted_graphed(step):
            self.steps += 1
            inside_graphed.append(True)
            try:
                return self._graphed(step)
            finally:
                inside_graphed.pop()

        def counted_init(step, *args, **kwargs):
            self._init(step, *args, **kwargs)
            self.captures += 1
            self.reused += step.reused
        values._request_losses, graphs.ReplayedStep.__call__ = counted_losses, counted_graphed
        graphs.ReplayedStep.__init__ = counted_init
        return self

    def __exit__(self, *exc):
        values._request_losses, graphs.ReplayedStep.__call__, values.STOP_LOSS = self._losses, self._graphed, self._stop
        graphs.ReplayedStep.__init__ = self._init


def modes() -> list[tuple[str, bool]]:
    """(label, speed-ups on) of each timed run: the default, then the comparisons asked for."""
    return ([("fast", True)] + ([("fast_whole_rows", True)] if ARGS.whole_rows else [])
            + ([("fast_capture_each_edit", True)] if ARGS.capture_each_edit else [])
            + [(f"fast_stepped_tokens_rounded_to_{n}", True) for n in ARGS.round_stepped]
            + ([("baseline", False)] if ARGS.baseline else []))


@contextlib.contextmanager
def switched(mode: str, enabled: bool):
    """Speed-ups on or off; for ``fast_whole_rows``, on but without the split at the looked-up token."""
    split, kept, stepped = values._prefix_split_is_exact, graphs.KEPT_PER_MODEL, values.ROUND_STEPPED
    if mode.startswith("fast_whole_rows"):
        values._prefix_split_is_exact = lambda *args, **kwargs: False
    if mode.startswith("fast_capture_each_edit"):
        graphs.KEPT_PER_MODEL = 0
    if mode.startswith("fast_stepped_tokens_rounded_to_"):
        values.ROUND_STEPPED = int(mode.rsplit("_", 1)[1])
    graphs.clear()
    try:
        with speedups.enabled(enabled):
            yield
    finally:
        values._prefix_split_is_exact, graphs.KEPT_PER_MODEL, values.ROUND_STEPPED = split, kept, stepped


def target_log_prob(model, tok, request) -> float:
    """Mean log-probability of the new target's tokens after the bare prompt."""
    prompt = tok(request["prompt"])["input_ids"]
    target = tok(" " + request["target_new"])["input_ids"]
    ids = torch.tensor([prompt + target], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float().log_softmax(-1)
    return float(logits.gather(1, torch.tensor(target, device=ids.device)[:, None]).mean())


def bench_rome(model, spec, config, tok, records, device, repeats: int) -> dict:
    hp = {**method_hparams(spec, config, get_registry().method("ROME"), model_name="llama-7b-shaped"),
          "layers": [5], "v_num_grad_steps": 25, "context_template_length_params": [[5, 10], [10, 10]]}
    requests = [r for r in records if r["subject"] in r["prompt"]][: repeats + 1]
    adapterkit.edit(model, tok, requests[:1], hp, evaluate=False).restore()  # warm-up, context templates sampled
    print(f"rows split at the looked-up token (exact on this model): {values._prefix_split_cache.get(model)}")
    out = {}
    for mode, enabled in modes():
        times, log_probs = [], []
        with switched(mode, enabled), StepCounter() as counter:
            reused = []
            for request in requests[1:]:
                before = counter.reused
                seconds, result = timed(lambda: adapterkit.edit(model, tok, [request], hp, evaluate=False), device)
                times.append(seconds)
                reused.append(counter.reused > before)
                log_probs.append(target_log_prob(model, tok, request))
                result.restore()
        out[mode] = {"median_s": statistics.median(times), "times_s": times, "steps_per_edit": counter.steps / len(times),
                     "target_log_prob_after": log_probs, "graphed_steps": counter.captures,
                     "reused_from_an_earlier_edit": counter.reused, "reused_per_edit": reused,
                     "median_s_of_reused": statistics.median([t for t, r in zip(times, reused) if r] or [float("nan")])}
        print(f"ROME one edit at layer 5 [{mode}]: median {out[mode]['median_s']:.3f} s over {len(times)} "
              f"({', '.join(f'{t:.3f}' for t in times)}), {counter.steps / len(times):.0f} steps per edit, "
              f"target log-prob after {statistics.mean(log_probs):.3f}; {counter.reused} of {counter.captures} "
              f"graphed steps reused a capture kept from an earlier edit (median of those edits "
              f"{out[mode]['median_s_of_reused']:.3f} s)")
    if ARGS.phases:
        out["phases"] = rome_phases(model, tok, requests[1:], hp, device)
    if ARGS.profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile
        with speedups.enabled(True), StepCounter(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            adapterkit.edit(model, tok, requests[1:2], hp, evaluate=False).restore()
            synchronise(device)
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
    return out


def rome_phases(model, tok, requests, hp, device) -> dict:
    """Seconds in each part of each ROME edit, each part timed between two device synchronisations (so nothing
    overlaps them here; the parts add up to a little more than an edit timed whole). Then the host's view of the
    last edit (cProfile)."""
    import cProfile
    import pstats

    from adapterkit.editing.result import EditResult

    parts = {"key": (values, "context_keys"), "value": (values.ValueOptimiser, "optimise"),
             "value: tokens": (values, "value_batch"),
             "value: steps": (values, "_step_until_settled"),
             "current key and value": (values, "module_io"), "ledger": (EditResult, "add")}
    spent: dict[str, float] = {}
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in parts.items()}

    def timed_part(name, function):
        def wrapper(*args, **kwargs):
            synchronise(device)
            seconds, result = timed(lambda: function(*args, **kwargs), device)
            spent[name] = spent.get(name, 0.0) + seconds
            return result
        return wrapper
    for name, (owner, attribute) in parts.items():
        setattr(owner, attribute, timed_part(name, originals[name]))
    edits = []
    try:
        with StepCounter() as counter:
            for request in requests:
                spent.clear()
                reused_before = counter.reused
                seconds, result = timed(lambda: adapterkit.edit(model, tok, [request], hp, evaluate=False), device)
                result.restore()
                edits.append({"whole edit": seconds, **spent, "reused": counter.reused > reused_before})
                print("ROME edit parts, s: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                         for k, v in edits[-1].items()))
    finally:
        for name, (owner, attribute) in parts.items():
            setattr(owner, attribute, originals[name])
    profiler = cProfile.Profile()
    with StepCounter():
        profiler.enable()
        adapterkit.edit(model, tok, requests[-1:], hp, evaluate=False)
        synchronise(device)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(22)
    return {"edits": edits}


def kept_graphs(model) -> list[float]:
    """MiB held by each captured step kept for ``model`` (graphs.py), least recently used first."""
    footprints = [c.footprint / 2**20 for c in graphs._kept.get(model, {}).values()]
    print(f"captured steps kept: {len(footprints)}, their memory pools {', '.join(f'{f:.0f}' for f in footprints)} MiB")
    return footprints


def bench_memit(model, spec, config, tok, records, device, n_requests: int, scratch: Path) -> dict:
    corpus = scratch / "corpus.txt"
    corpus.write_text("\n".join(r["prompt"] + " " + r["ground_truth"] for r in records) + "\n")
    hp = {**method_hparams(spec, config, get_registry().method("MEMIT"), model_name="llama-7b-shaped"),
          "v_num_grad_steps": 25, "mom2_corpus": str(corpus), "stats_dir": str(scratch / "stats"),
          "mom2_dataset": "bench", "mom2_n_samples": 1000}
    adapterkit.edit(model, tok, unique_requests(records, 4), hp, evaluate=False).restore()  # statistics, warm-up
    requests = unique_requests(records, n_requests)
    out = {}
    settings = load_settings(hp)
    top = settings.layers[-1]
    point = settings.mlp_module_tmp.format(top)
    with frozen(model):
        templates = values.context_templates(model, tok, settings)
        for mode, enabled in modes():
            with switched(mode, enabled), StepCounter() as counter:
                seconds, _ = timed(lambda: values.optimise_values(
                    model, tok, normalise_requests(requests[:64]), [point], templates, settings.fact_token,
                    values.LossSettings.from_settings(settings), batch_size=settings.v_batch_size,
                    **values.value_options(settings, spec.num_layers(config), top)), device)
            out[f"values_only_{mode}"] = {"requests": 64, "seconds": seconds, "steps": counter.steps}
            print(f"MEMIT target values alone [{mode}]: 64 requests in {seconds:.2f} s = {seconds / 64 * 1e3:.0f} ms/request "
                  f"({counter.steps} steps)")
    runs = [(mode, enabled, b) for mode, enabled in modes() if enabled for b in ARGS.v_batch_sizes]
    runs += [("baseline", False, 16)] if ARGS.baseline else []
    for mode, enabled, v_batch_size in runs:
        mode = f"{mode}_v_batch_{v_batch_size}"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with switched(mode, enabled), StepCounter() as counter:
            seconds, result = timed(lambda: adapterkit.edit(model, tok, requests, {**hp, "v_batch_size": v_batch_size},
                                                            evaluate=False), device)
        log_prob = statistics.mean(target_log_prob(model, tok, r) for r in requests[:16])
        result.restore()
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        out[mode] = {"requests": n_requests, "seconds": seconds, "per_request_s": seconds / n_requests,
                     "projected_10000_min": seconds / n_requests * 10000 / 60, "value_steps": counter.steps,
                     "peak_gib": peak, "target_log_prob_after_first16": log_prob}
        print(f"MEMIT layers {hp['layers']} [{mode}]: {n_requests} requests in {seconds:.1f} s = "
              f"{seconds / n_requests * 1e3:.0f} ms/request (10,000 projected: {seconds / n_requests * 10000 / 60:.1f} min), "
              f"{counter.steps} value steps, peak {peak and f'{peak:.1f} GiB'}, target log-prob after {log_prob:.3f}")
    return out


def bench_stats(model, spec, config, tok, records, device, scratch: Path, dtype) -> dict:
    words = " ".join(r["prompt"] + " " + r["ground_truth"] + "." for r in records).split()
    documents = [" ".join(words[(i * 97) % len(words):] + words)[:20000] for i in range(256)]
    corpus = scratch / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    hp = {**method_hparams(spec, config, get_registry().method("MEMIT"), model_name="llama-7b-shaped"),
          "stats_dir": str(scratch / "stats-long"), "mom2_dataset": "bench-long", "mom2_n_samples": len(documents)}
    settings = load_settings(hp)
    modules = [settings.rewrite_module_tmp.format(layer) for layer in settings.layers]
    rows = [tok(d, truncation=True, max_length=512)["input_ids"] for d in documents]
    tokens = sum(len(r) for r in rows)
    batch_size = 16

    def plain_forward():
        with torch.no_grad(), frozen(model), trace(model, outputs=[settings.layer_module_tmp.format(settings.layers[-1])], stop=True):
            for lo in range(0, len(rows), batch_size):
                run(model, pad_rows(rows[lo: lo + batch_size], [0] * len(rows[lo: lo + batch_size]), pad_id(tok)).to(device))
    plain_forward()
    plain, _ = timed(plain_forward, device)
    out = {"tokens": tokens, "layers": settings.layers, "plain_forward_tok_s": tokens / plain}
    for mode, enabled in (("fast", True), ("baseline", False)) if ARGS.baseline else (("fast", True),):
        with speedups.enabled(enabled):
            seconds, (sums, _) = timed(lambda: stats._accumulate(model, tok, modules, documents, batch_size, torch.float32,
                                                                 None, False, 512), device)
            written, _ = timed(lambda: compute_stats(model, tok, settings, spec, corpus, scratch / f"stats-{mode}",
                                                     batch_size=batch_size, progress=False), device)
        out[mode] = {"tok_s": tokens / seconds, "ratio_to_plain_forward": plain / seconds, "with_files_s": written}
        print(f"statistics pass, layers {settings.layers} at once [{mode}]: {tokens / seconds:,.0f} tokens/s = "
              f"{plain / seconds:.2f} of a plain forward to layer {settings.layers[-1]} ({tokens / plain:,.0f} tokens/s); "
              f"compute_stats with its {len(modules)} files: {written:.1f} s")
    if ARGS.baseline:
        import numpy as np
        for module in modules[:1]:
            a, b = (np.load(next((scratch / f"stats-{m}").rglob(f"{module}_*.npz")))["mom2.mom2"] for m in ("fast", "baseline"))
            out["relative_difference"] = float(np.abs(a - b).max() / np.abs(b).max())
            print(f"fast vs baseline second moments ({module}): max relative difference {out['relative_difference']:.2e}")
    return out


def main() -> None:
    device, name, _, records, tok = setup()
    config = TINY if ARGS.tiny else LLAMA_7B
    dtype = DTYPES[ARGS.dtype]
    model, spec = build(config, dtype, device)
    results = {"environment": environment(name), "dtype": ARGS.dtype,
               "shape": {k: config[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")}}
    print(f"device: {name}; torch {torch.__version__}; {ARGS.dtype}; {config['num_hidden_layers']} layers x {config['hidden_size']}")
    with tempfile.TemporaryDirectory() as scratch:
        if "rome" in ARGS.rows:
            results["rome"] = bench_rome(model, spec, config, tok, records, device, ARGS.repeats)
            results["rome"]["kept_graphs_mib"] = kept_graphs(model)
        if "memit" in ARGS.rows:
            results["memit"] = bench_memit(model, spec, config, tok, records, device, ARGS.memit_requests, Path(scratch))
            results["memit"]["kept_graphs_mib"] = kept_graphs(model)
        if "stats" in ARGS.rows:
            results["stats"] = bench_stats(model, spec, config, tok, records, device, Path(scratch), dtype)
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="*", default=["rome", "memit", "stats"])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--memit-requests", type=int, default=256)
    parser.add_argument("--v-batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--whole-rows", action="store_true")
    parser.add_argument("--capture-each-edit", action="store_true", help="also time the fast path keeping no captured step")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--phases", action="store_true", help="time the parts of a ROME edit")
    parser.add_argument("--round-stepped", type=int, nargs="*", default=[],
                        help="also time the fast path with the stepped tokens padded to these multiples (values.ROUND_STEPPED)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json")
    ARGS = parser.parse_args()
    main()
