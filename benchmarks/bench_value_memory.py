"""Peak GPU memory of the target-value optimisation with the output head cut to the positions the loss reads
(``head_logits``) against full-vocabulary logits for every position, on a GPT-2 XL-shaped model.

One value batch holds every context template of every request; the loss reads the target tokens and one KL
token per request. Prints the device, peak memory above the model's weights, time per step, and ratios.
Run: python benchmarks/bench_value_memory.py [n_requests] [steps]
"""
import sys

import torch

from adapterkit.arch.detect import method_hparams
from adapterkit.checkpoints.build import build_model
from adapterkit.editing.hooks import frozen
from adapterkit.editing.values import LossSettings, context_templates, loss_module, optimise_values
from adapterkit.settings.hparams import load_settings
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from common import GPT2_XL, setup, timed

GiB = 1 << 30


def main(n_requests: int = 64, steps: int = 5) -> None:
    device, name, spec, records, tok = setup()
    if device.type != "cuda":
        print(f"device: {name}; peak memory is measured on a CUDA device only")
        return
    model = build_model(GPT2_XL, spec).to(device).eval()
    memit = load_settings(method_hparams(spec, GPT2_XL, get_registry().method("MEMIT"), model_name="gpt2-xl-shaped"))
    requests = normalise_requests((records * (n_requests // len(records) + 1))[:n_requests])
    top = memit.layer_module_tmp.format(memit.layers[-1])
    settings = LossSettings.from_settings(memit.replace(v_num_grad_steps=steps))
    weights = torch.cuda.memory_allocated(device)
    with frozen(model):
        templates = context_templates(model, tok, memit)
        rows = n_requests * (sum(len(g) for g in templates) + 1)
        print(f"device: {name}; GPT-2 XL shape (48 x 1600, vocab 50257, random weights), {n_requests} requests "
              f"x {sum(len(g) for g in templates)} contexts + KL = {rows} rows, {steps} steps; weights {weights / GiB:.2f} GiB")
        found = {}
        for label, head in (("full logits", None), ("head cut", memit.lm_head_module)):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            seconds, found[label] = timed(lambda: optimise_values(
                model, tok, requests, [top], templates, memit.fact_token, settings,
                loss_module=loss_module(memit, spec.num_layers(GPT2_XL), memit.layers[-1]), lm_head=head,
                batch_size=n_requests)[top], device)
            peak = (torch.cuda.max_memory_allocated(device) - weights) / GiB
            found[label + " peak"], found[label + " s"] = peak, seconds
            print(f"{label:12s} peak above weights {peak:7.2f} GiB   {seconds / steps:6.2f} s/step")
    full, cut = found["full logits peak"], found["head cut peak"]
    gap = float((found["full logits"] - found["head cut"]).norm() / found["full logits"].norm())
    print(f"head cut: x{full / cut:.1f} less memory, x{found['full logits s'] / found['head cut s']:.2f} time ratio; "
          f"values differ by {gap:.1e} (relative)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
