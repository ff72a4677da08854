"""MEMIT's target-value optimisation: all requests of a call in one padded batch vs one request at a time
(the reference implementation's loop, ~88 % of its run time), on a GPT-2 XL-shaped model; and the
second-moment statistics pass in tokens per second.

The weights are random (no hub here): every request runs all ``v_num_grad_steps`` either way, so the
comparison is the same work batched or not. Prints the device, absolute times and ratios.
Run: python benchmarks/bench_memit_gpu.py [n_requests]
"""
import sys
import tempfile
from pathlib import Path

from adapterkit.arch.detect import method_hparams
from adapterkit.checkpoints.build import build_model
from adapterkit.editing.hooks import frozen
from adapterkit.editing.stats import compute_stats
from adapterkit.editing.values import LossSettings, context_templates, value_options, optimise_values
from adapterkit.settings.hparams import load_settings
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from common import GPT2_XL, setup, timed


def main(n_requests: int = 32) -> None:
    device, name, spec, records, tok = setup()
    model = build_model(GPT2_XL, spec).to(device).eval()
    memit = load_settings(method_hparams(spec, GPT2_XL, get_registry().method("MEMIT"), model_name="gpt2-xl-shaped"))
    requests = normalise_requests(records[:n_requests])
    top = memit.layer_module_tmp.format(memit.layers[-1])
    settings = LossSettings.from_settings(memit)
    print(f"device: {name}; GPT-2 XL shape (48 x 1600, random weights), MEMIT layers {memit.layers}, "
          f"{settings.steps} steps, {n_requests} requests")
    with frozen(model):
        templates = context_templates(model, tok, memit)
        run = lambda reqs, batch: optimise_values(  # noqa: E731
            model, tok, reqs, [top], templates, memit.fact_token, settings,
            **value_options(memit, spec.num_layers(GPT2_XL), memit.layers[-1]), batch_size=batch)[top]
        run(requests[:2], 2)  # warm-up
        one_by_one, _ = timed(lambda: [run([r], 1) for r in requests], device)
        batched, _ = timed(lambda: run(requests, 16), device)
        together, _ = timed(lambda: run(requests, n_requests), device)
    print(f"values one request at a time  {one_by_one:8.2f} s   ({one_by_one / n_requests * 1e3:.0f} ms/request)")
    print(f"values 16 per batch           {batched:8.2f} s   x{one_by_one / batched:.1f} faster")
    print(f"values all {n_requests} in one batch     {together:8.2f} s   x{one_by_one / together:.1f} faster")

    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.txt"
        corpus.write_text("\n".join(r["prompt"] + " " + r["ground_truth"] + ". " + r["rephrase_prompt"] for r in records * 40) + "\n")
        n_tokens = sum(len(tok(line)["input_ids"]) for line in corpus.read_text().splitlines())
        stats_settings = memit.replace(mom2_n_samples=100000, mom2_dataset="bench")
        seconds, _ = timed(lambda: compute_stats(model, tok, stats_settings, spec, corpus, Path(scratch) / "stats",
                                                 batch_size=64, progress=False), device)
    print(f"stats for {len(memit.layers)} layers in one pass: {n_tokens} tokens in {seconds:.2f} s = "
          f"{n_tokens / seconds:,.0f} tokens/s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
