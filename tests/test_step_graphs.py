"""Captured optimisation steps kept across edits (adapterkit/editing/graphs.py), checked on the CPU.

A CUDA graph replays the kernels it captured on the tensors it captured them with. Here a "capture" keeps the step
function itself and a replay calls it again, which reads and writes those same tensors: a later edit that reuses a
kept step copies its state into them, exactly as it would into a graph's, so a tensor missing from the state
shows up as a wrong edit here as it would on a GPU.
"""
from __future__ import annotations

import pytest
import torch

from dataclasses import replace

import adapterkit
import adapterkit.settings.hparams
from adapterkit.editing import graphs, speedups, values
from adapterkit.editing.hooks import frozen
from adapterkit.requests import normalise_requests
from test_speedups import BATCHED, REQUESTS, assert_same_updates, hparams, tiny


@pytest.fixture
def emulated_graphs(monkeypatch):
    """Steps are 'captured' on the CPU; returns the list of every ReplayedStep made."""
    made = []
    init = graphs.ReplayedStep.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "capture", lambda step: (step, 0))
    monkeypatch.setattr(graphs, "_memory_budget", lambda: 1 << 30)
    monkeypatch.setattr(graphs.ReplayedStep, "__init__", recording_init)
    graphs.clear()
    yield made
    graphs.clear()


def deltas_of(model, tok, request, hp):
    result = adapterkit.edit(model, tok, [request], hp, evaluate=False)
    deltas = {n: d.clone() for n, d in result.deltas.items()}
    result.restore()
    return deltas


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_a_later_edit_of_the_same_shapes_replays_the_kept_step_and_gets_its_own_edit(arch, emulated_graphs):
    model, spec, config, tok = tiny(arch)
    hp = hparams("ROME", spec, config)
    first, second = REQUESTS[0], REQUESTS[1]
    deltas_of(model, tok, first, hp)
    assert emulated_graphs[-1].reads_only_its_state, "the step read a tensor outside its state, so nothing is kept"
    reused = deltas_of(model, tok, second, hp)
    assert emulated_graphs[-1].reused, "the second edit's shapes were expected to round to the first's"
    graphs.clear()
    alone = deltas_of(model, tok, second, hp)
    assert not emulated_graphs[-1].reused
    # the kept step runs the same operations on the same shapes as a fresh one, only on its own tensors
    assert reused.keys() == alone.keys() and all(torch.equal(reused[n], alone[n]) for n in reused)
    with speedups.enabled(False):
        straightforward = deltas_of(model, tok, second, hp)
    assert_same_updates(reused, straightforward, model)


def test_memit_chunks_of_the_same_shapes_share_one_capture_and_match_the_straightforward_edit(emulated_graphs):
    model, spec, config, tok = tiny("llama")
    hp = hparams("MEMIT", spec, config, **{**BATCHED, "v_batch_size": 1})
    fast = adapterkit.edit(model, tok, REQUESTS[:2], hp, evaluate=False)
    fast_deltas = {n: d.clone() for n, d in fast.deltas.items()}
    fast.restore()
    assert [step.reused for step in emulated_graphs] == [False, True]
    with speedups.enabled(False):
        plain = adapterkit.edit(model, tok, REQUESTS[:2], hp, evaluate=False)
    plain_deltas = {n: d.clone() for n, d in plain.deltas.items()}
    plain.restore()
    assert_same_updates(fast_deltas, plain_deltas, model)  # padded rows only round otherwise


def test_a_step_that_reads_a_tensor_outside_its_state_is_not_kept(emulated_graphs):
    model = torch.nn.Linear(4, 4)
    x, outside = torch.randn(2, 4), torch.randn(2, 4)
    out = torch.zeros(2, 4)

    def step():
        out.copy_(model(x) + outside)
    for state, kept in (([x, out], False), ([x, out, outside], True)):
        graphs.clear()
        replayed = graphs.ReplayedStep(step, state, model=model, signature="s")
        for _ in range(3):
            replayed()
        assert replayed.reads_only_its_state is kept
        assert (model in graphs._kept and "s" in graphs._kept[model]) is kept
        torch.testing.assert_close(out, model(x).detach() + outside)


def test_the_step_stops_once_every_request_settles(emulated_graphs, monkeypatch):
    model, spec, config, tok = tiny("llama")
    hp = adapterkit.settings.hparams.load_settings(hparams("ROME", spec, config, v_num_grad_steps=30))
    request = normalise_requests(REQUESTS[:1])[0]
    point = hp.mlp_module_tmp.format(hp.layers[0])
    templates = [["{}"]]

    def value(steps: int):
        loss = replace(values.LossSettings.from_settings(hp), steps=steps)
        with frozen(model):
            return values.optimise_values(model, tok, [request], [point], templates, hp.fact_token, loss,
                                          **values.value_options(hp, spec.num_layers(config), hp.layers[0]))[point]
    calls = []
    losses = values._request_losses

    def counted(*args, **kwargs):
        calls.append(1)
        return losses(*args, **kwargs)
    monkeypatch.setattr(values, "_request_losses", counted)
    unmoved = value(1)
    assert calls == []
    moved = value(30)
    assert len(calls) == 29 and not torch.equal(moved, unmoved)
    calls.clear()
    monkeypatch.setattr(values, "STOP_LOSS", float("inf"))
    assert torch.equal(value(30), unmoved)
    assert len(calls) == 1, "the first step finds every loss below the stop and drops its update"
