"""The equality tests of the exact speed-ups (test_speedups.py, test_step_graphs.py) compare edits that their loss
decides, not rounding, so that they hold on any CPU: checked here on the edits they make, and on a second CPU
dispatch level and thread count in a subprocess, before a user's machine finds a difference."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import adapterkit
from adapterkit.editing import prefix, speedups, values
from test_speedups import BATCHED, EDIT_LAYER, REQUESTS, assert_same_updates, edit_both_ways, hparams, tiny

# (method, architecture, requests, hparams changes): the most rounding-sensitive of the compared ROME edits (its
# steps bounce off the clamp) and the batched MEMIT edit (two chunks, replayed blocks, cached prefixes)
ACROSS_CPUS = {"ROME-gpt2": ("ROME", "gpt2", 1, {}), "MEMIT-llama": ("MEMIT", "llama", 3, BATCHED)}
TESTS = Path(__file__).resolve().parent


def first_gradients(method: str, arch: str, n: int, changes: dict, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(each request's loss, the norm of its loss's gradient in each delta [points, requests]) at the first step of
    the straightforward edit, before any delta moves."""
    model, spec, config, tok = tiny(arch)
    found = []
    losses = values._request_losses

    def recorded(logits, vb, reference, deltas, init, settings):
        loss = losses(logits, vb, reference, deltas, init, settings)
        if not found:
            grads = torch.autograd.grad(loss.sum(), list(deltas.values()), retain_graph=True)
            found.append((loss.detach(), torch.stack([g.norm(dim=-1) for g in grads])))
        return loss
    monkeypatch.setattr(values, "_request_losses", recorded)
    with speedups.enabled(False):
        adapterkit.edit(model, tok, REQUESTS[:n], hparams(method, spec, config, **{**changes, "v_num_grad_steps": 1}),
                        evaluate=False).restore()
    return found[0]


@pytest.mark.parametrize("method,arch,n,changes", [("ROME", "gpt2", 1, {}), ("ROME", "llama", 1, {}),
                                                   ("ROME", "gpt_neox", 1, {}), ("MEMIT", "llama", 3, BATCHED),
                                                   ("PMET", "llama", 3, BATCHED)])
def test_the_compared_edits_move_with_their_loss(method, arch, n, changes, monkeypatch):
    loss, gradients = first_gradients(method, arch, n, changes, monkeypatch)
    # A gradient computed in float32 is uncertain by a few roundings of the loss it differentiates; these are
    # thousands of times that, so the first step's direction (Adam's sign, in effect) is the loss's.
    rounding = torch.finfo(torch.float32).eps * float(loss.abs().max())
    assert float(gradients.min()) > 1e4 * rounding


def test_an_edit_at_the_top_block_is_decided_by_rounding(monkeypatch):
    """Why the compared edits sit below the top block (test_speedups.EDIT_LAYER)."""
    model, spec, config, tok = tiny("llama")
    top = spec.num_layers(config) - 1
    assert EDIT_LAYER < top
    loss, gradients = first_gradients("ROME", "llama", 1, {"layers": [top]}, monkeypatch)
    assert float(gradients.max()) < torch.finfo(torch.float32).eps * float(loss.abs().max())


CHILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from test_speedups import REQUESTS, edit_both_ways, hparams, tiny
from test_speedups_rounding import ACROSS_CPUS
found = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
for key, (method, arch, n, changes) in ACROSS_CPUS.items():
    model, spec, config, tok = tiny(arch)
    found[key] = edit_both_ways(model, tok, REQUESTS[:n], hparams(method, spec, config, **changes))
torch.save(found, sys.argv[1])
"""


def test_fast_and_straightforward_edits_agree_on_another_cpu_dispatch_level_and_thread_count(tmp_path):
    """Another dispatch level (AVX2 below AVX-512, the plain C++ kernels below AVX2) and thread count round the same
    arithmetic otherwise: an edit that rounding decides differs between them, as it would between two machines."""
    capability, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    other_threads = 1 if threads > 1 else 2
    source = Path(adapterkit.__file__).resolve().parent.parent  # the adapterkit this process runs
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2" if capability.startswith("AVX512") else "default",
           "OMP_NUM_THREADS": str(other_threads),
           "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), str(source), os.environ.get("PYTHONPATH")) if p)}
    out = tmp_path / "deltas.pt"
    child = subprocess.run([sys.executable, "-c", CHILD, str(out), str(other_threads)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    there = torch.load(out)
    assert (there["capability"], there["threads"]) != (capability, threads)
    for key, (method, arch, n, changes) in ACROSS_CPUS.items():
        model, spec, config, tok = tiny(arch)
        fast, plain = edit_both_ways(model, tok, REQUESTS[:n], hparams(method, spec, config, **changes))
        far_fast, far_plain = there[key]
        for found in (fast, far_fast, far_plain):
            assert_same_updates(found, plain, model)


def test_the_attention_cache_goes_under_the_keyword_the_model_takes():
    """transformers renamed ``past_key_values`` to ``cache`` (and warns on the old name until it drops it)."""
    model, spec, config, tok = tiny("llama")
    argument = prefix.cache_argument(model)
    assert argument in inspect.signature(model.forward).parameters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        edit_both_ways(model, tok, REQUESTS[:1], hparams("ROME", spec, config))
    assert not [str(w.message) for w in caught if "past_key_values" in str(w.message)]
