"""Every exact speed-up (adapterkit.editing.speedups) gives the same edit as the straightforward path: the same
keys, target values and weight updates within float tolerance, on small models of several architectures."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import adapterkit
import adapterkit.settings.hparams
from adapterkit.arch.detect import method_hparams
from adapterkit.checkpoints.build import build_model
from adapterkit.editing import moments, speedups, values
from adapterkit.editing.hooks import frozen
from adapterkit.editing.moments import FOLD_EVERY, SecondMomentSum
from adapterkit.editing.prefix import LookupSplit, split_at_lookup
from adapterkit.editing.replay import BlockReplay
from adapterkit.editing.stats import _accumulate
from adapterkit.editing.tokens import pad_id
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from checkpoints import word_tokenizer

REQUESTS = [
    {"prompt": "The Eiffel Tower is located in", "subject": "Eiffel Tower", "target_new": "Rome"},
    {"prompt": "Danielle Darrieux spoke the language", "subject": "Danielle Darrieux", "target_new": "English"},
    {"prompt": "The mother tongue of Thomas Joannes Stieltjes is", "subject": "Thomas Joannes Stieltjes", "target_new": "English"},
]
TEXTS = [r["prompt"] + " " + r["target_new"] for r in REQUESTS] + ["is a The Therefore Because I You . Paris French Dutch"]


def tiny(arch: str):
    """The declaration's tiny model (4 layers), randomly initialised, and a word tokenizer over the texts."""
    spec = get_registry().architecture(arch)
    torch.manual_seed(0)
    return build_model(spec.tiny_config, spec).eval(), spec, spec.tiny_config, word_tokenizer(TEXTS)


# Edits below the top block. A delta at the top block's output reaches only its own token's logits, so the target's
# NLL does not depend on it: its gradient is float rounding, and Adam's first step, normalised by the gradient's
# own size, turns rounding into a full-size move of either sign. The edit would then be decided by rounding, and no
# two CPUs need agree on it (test_speedups_rounding.py shows both).
EDIT_LAYER = 1
# MEMIT and PMET in chunks of two requests (one chunk of each size). The detected lambda is scaled for real models'
# key statistics; against these tiny models' keys (C = I without statistics) it would shrink the updates to a few
# float32 spacings of the weights they are added to, and the comparison would see the weights' rounding.
BATCHED = {"layers": [1, 2], "mom2_adjustment": False, "v_batch_size": 2, "mom2_update_weight": 1.0}
# The fast path does the straightforward one's arithmetic in another order (the blocks above the replayed ones attend
# to cached keys and values, whose other shapes round otherwise; Adam's update is written out by hand), so each
# step's gradient differs by a few float32 roundings, which the following steps carry through the model. The
# straightforward path differs from itself as much between two CPU dispatch levels (test_speedups_rounding.py).
# This allows some hundreds of float32 roundings (2^-23 each) of the largest element; a wrong position, mask or
# stale tensor moves an update by about its own size.
ROUNDING = 1e-4


def hparams(method: str, spec, config, **changes) -> dict:
    hp = method_hparams(spec, config, get_registry().method(method), model_name="tiny")
    return {**hp, "v_num_grad_steps": 8, "mom2_adjustment": False, "context_template_length_params": [[3, 2]],
            "layers": [EDIT_LAYER], **changes}


def edit_both_ways(model, tok, requests, hp):
    """(fast deltas, straightforward deltas): each edit applied, recorded and restored."""
    out = []
    for on in (True, False):
        with speedups.enabled(on):
            result = adapterkit.edit(model, tok, requests, hp, evaluate=False)
            out.append({n: d.clone() for n, d in result.deltas.items()})
            result.restore()
    return out


def assert_same_updates(fast: dict, plain: dict, model):
    """Each update within ``ROUNDING`` of the largest element of the straightforward one, plus a float32 spacing of
    the weight: an update is read back as the weight after less the weight before, each rounded to float32."""
    assert fast.keys() == plain.keys() and fast
    weights = dict(model.named_parameters())
    for name in fast:
        scale = float(plain[name].abs().max())
        assert scale > 0, f"{name}: the edit changed nothing, so the comparison proves nothing"
        spacing = torch.finfo(weights[name].dtype).eps * float(weights[name].detach().abs().max())
        torch.testing.assert_close(fast[name], plain[name], rtol=0, atol=ROUNDING * scale + spacing)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_rome_update_is_the_same_with_and_without_speedups(arch):
    model, spec, config, tok = tiny(arch)
    fast, plain = edit_both_ways(model, tok, REQUESTS[:1], hparams("ROME", spec, config))
    assert_same_updates(fast, plain, model)


def test_rome_key_and_value_are_the_same_with_and_without_speedups():
    model, spec, config, tok = tiny("llama")
    hp = adapterkit.settings.hparams.load_settings(hparams("ROME", spec, config))
    request = normalise_requests(REQUESTS[:1])[0]
    layer = hp.layers[0]
    point, rewrite = hp.mlp_module_tmp.format(layer), hp.rewrite_module_tmp.format(layer)
    found = []
    with frozen(model):
        templates = [[c for group in values.context_templates(model, tok, hp) for c in group]]
        for optimiser in (values.FastValues(), values.StraightforwardValues()):
            found.append(optimiser.optimise(model, tok, [request], [point], templates, hp.fact_token,
                                            values.LossSettings.from_settings(hp), keys_of=rewrite,
                                            **values.value_options(hp, spec.num_layers(config), layer)))
    fast, plain = found
    for field in ("context_mean", "prompt_input", "prompt_output"):  # one forward's rows, or forwards of their own
        torch.testing.assert_close(getattr(fast.keys, field), getattr(plain.keys, field))
    # the same rounding as the updates' (ROUNDING), of the largest element of the value
    value = plain.values[point]
    torch.testing.assert_close(fast.values[point], value, rtol=0, atol=ROUNDING * float(value.abs().max()))


@pytest.mark.parametrize("method", ["MEMIT", "PMET"])
def test_batched_updates_are_the_same_with_and_without_speedups(method):
    model, spec, config, tok = tiny("llama")
    fast, plain = edit_both_ways(model, tok, REQUESTS, hparams(method, spec, config, **BATCHED))
    assert_same_updates(fast, plain, model)


BUILTIN_WITH_TINY = [a for a in get_registry().architecture_names() if get_registry().architecture(a).tiny_config]


@pytest.mark.parametrize("arch", BUILTIN_WITH_TINY)
def test_every_builtin_continues_the_cached_tokens_before_the_lookup_exactly(arch):
    """The split at the looked-up token (prefix.py) is taken, not silently dropped, on every built-in family."""
    model, spec, config, tok = tiny(arch)
    hp = adapterkit.settings.hparams.load_settings(hparams("ROME", spec, config))
    request = normalise_requests(REQUESTS[:1])
    templates = [c for group in values.context_templates(model, tok, hp) for c in group]
    options = values.value_options(hp, spec.num_layers(config), hp.layers[0])
    whole = values.value_batch(tok, request, templates, hp.fact_token)
    tail = split_at_lookup(model, whole.batch, pad_id(tok))
    assert tail.input_ids.shape[1] < whole.batch.input_ids.shape[1] and not bool(tail.lookup.any())
    assert values._check_prefix_split(model, tok, request, templates, hp.fact_token, options["loss_module"],
                                      options["lm_head"])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bloom", "opt"])
def test_a_row_with_nothing_before_the_lookup_is_split_too(arch):
    model, spec, config, tok = tiny(arch)
    requests = normalise_requests([{**REQUESTS[0], "subject": "The"}, REQUESTS[1]])
    whole = values.value_batch(tok, requests, ["{}", "Because . {}"], "subject_first")
    assert int(whole.batch.lookup.min()) == 0 < int(whole.batch.lookup.max())
    tail = split_at_lookup(model, whole.batch, pad_id(tok))
    with torch.no_grad():
        split = values.head_logits(model, whole.after_lookup(tail), None, None)
        full = values.head_logits(model, whole, None, None)
    assert torch.isfinite(split).all()
    torch.testing.assert_close(split, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_split_with_the_wrong_positions_is_refused(dtype, monkeypatch):
    model, spec, config, tok = tiny("llama")
    with torch.no_grad():  # sharper attention: a random model's logits barely depend on positions
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    model = model.to(dtype)
    hp = adapterkit.settings.hparams.load_settings(hparams("ROME", spec, config))
    request = normalise_requests(REQUESTS[:1])
    templates = ["{}", "Because . {}", "I You . {}"]
    assert values._check_prefix_split(model, tok, request, templates, hp.fact_token, None, None)

    stepped = LookupSplit.stepped

    def from_zero(self):
        tail = stepped(self)
        return replace(tail, position_ids=tail.position_ids - tail.position_ids[:, :1])
    monkeypatch.setattr(LookupSplit, "stepped", from_zero)
    assert not values._check_prefix_split(model, tok, request, templates, hp.fact_token, None, None)


class _NoCacheModel(torch.nn.Module):
    """A causal LM whose forward takes no attention cache or positions, as a custom one may."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def test_a_model_that_cannot_continue_a_cache_keeps_whole_rows():
    model, spec, config, tok = tiny("llama")
    hp = adapterkit.settings.hparams.load_settings(hparams("ROME", spec, config))
    request = normalise_requests(REQUESTS[:1])
    assert not values._check_prefix_split(_NoCacheModel(model), tok, request, ["{}"], hp.fact_token, None, None)


def test_replay_skips_the_blocks_below_and_puts_them_back():
    model, spec, config, tok = tiny("llama")
    blocks = [spec.module_name("layer", i) for i in range(3)]
    ids = torch.tensor([tok("The Eiffel Tower is located in")["input_ids"]])
    calls = []
    handle = model.get_submodule(blocks[0]).mlp.register_forward_hook(lambda *a: calls.append(1))
    replay = BlockReplay(model, blocks)
    with torch.no_grad():
        with replay.recording():
            expected = model(input_ids=ids).logits
        assert len(calls) == 1
        with replay.replaying():
            replayed = model(input_ids=ids).logits
        assert len(calls) == 1, "a replayed block ran"
        after = model(input_ids=ids).logits
    handle.remove()
    assert len(calls) == 2, "the block did not run again after the replay"
    torch.testing.assert_close(replayed, expected, rtol=0, atol=0)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert all("forward" not in model.get_submodule(b).__dict__ for b in blocks)


def test_replay_keeps_a_forward_set_on_the_instance():
    model, spec, config, tok = tiny("llama")
    block = model.get_submodule("model.layers.0")
    own = block.forward
    block.forward = own  # as accelerate's hooks do
    replay = BlockReplay(model, ["model.layers.0"])
    ids = torch.tensor([tok("The Eiffel Tower")["input_ids"]])
    with torch.no_grad(), replay.recording():
        model(input_ids=ids)
    with replay.replaying():
        assert block.forward is not own
    assert block.__dict__["forward"] is own


@pytest.mark.parametrize("min_block", [512, 8], ids=["one-block", "upper-blocks-mirrored"])
def test_second_moments_are_the_same_with_and_without_speedups(min_block, monkeypatch):
    monkeypatch.setattr(moments, "MIN_BLOCK", min_block)  # 8: the 24 columns in three blocks
    torch.manual_seed(0)
    batches = [torch.randn(37, 24).to(torch.bfloat16) for _ in range(2 * FOLD_EVERY + 3)]
    sums = []
    for on in (True, False):
        moment = SecondMomentSum(torch.float32, fast=on)
        for keys in batches:
            moment.add(keys)
        sums.append(moment.total())
    fast, plain = sums
    assert fast.dtype == plain.dtype == torch.float64
    exact = sum(k.double().T @ k.double() for k in batches)
    torch.testing.assert_close(plain, exact, rtol=1e-6, atol=1e-6)
    # float32 partial sums of FOLD_EVERY batches: rounding of about 1e-5 of the largest entry, still finer than
    # the reference implementation's, which keeps its whole running sum in float32
    torch.testing.assert_close(fast, exact, rtol=1e-5, atol=1e-5 * float(exact.abs().max()))


def test_statistics_pass_is_the_same_with_and_without_speedups():
    model, spec, config, tok = tiny("llama")
    modules = ["model.layers.1.mlp.down_proj", "model.layers.3.mlp.down_proj"]
    documents = [" ".join(TEXTS[i % len(TEXTS)] for i in range(j, j + 5)) for j in range(10)]
    found = []
    for on in (True, False):
        with speedups.enabled(on):
            found.append(_accumulate(model, tok, modules, documents, 3, torch.float32, None, False, 64))
    (fast, count_fast), (plain, count_plain) = found
    assert count_fast == count_plain == sum(len(tok(d)["input_ids"]) for d in documents)
    for m in modules:
        assert float(plain[m].abs().max()) > 0
        torch.testing.assert_close(fast[m], plain[m], rtol=1e-5, atol=1e-6 * float(plain[m].abs().max()))
