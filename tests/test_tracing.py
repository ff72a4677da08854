"""Causal tracing: exact restorations on hand-made models, the token-kind averages, the layers `detect --trace`
chooses, the CLI, and traces of the trained fact models and (where installed) of SmolLM2-135M."""
import importlib.util
import json

import pytest
import torch
import yaml

import adapterkit
from adapterkit.cli import main
from adapterkit.errors import AdapterkitError
from adapterkit.demo.facts import counterfact_sample
from adapterkit.arch.registry import get_registry
from checkpoints import random_model, records_tokenizer
from adapterkit.tracing.trace import (FactTrace, TraceResult, TraceSettings, causal_trace, draw_noise, load_trace,
                                read_trace, traced_layers, write_trace)

ARCHS = get_registry().architecture_names()
RECORDS = counterfact_sample()




@torch.no_grad()
def known_facts(model, tok, records, n: int) -> list[dict]:
    """Records whose true answer is made the model's own greedy next word (a random model knows nothing else)."""
    facts = []
    for record in records:
        ids = tok(record["prompt"], return_tensors="pt")["input_ids"]
        guess = int(model(input_ids=ids).logits[0, -1].argmax())
        if guess >= len(tok.all_special_ids):  # a word, not padding or end of text
            facts.append({**record, "ground_truth": tok.decode([guess])})
        if len(facts) == n:
            break
    return facts


def silence_attention_except(model, spec, keep: int, gain: float = 1.0) -> None:
    """Zero every attention output projection but layer ``keep``'s: only there can the subject reach later tokens.
    The final norm's gain is raised so that the random model's answers are far from uniform; ``keep``'s projection
    is multiplied by ``gain``."""
    with torch.no_grad():
        spec.module(model, "ln_f").weight.mul_(10)
        spec.module(model, "attn_out", keep).weight.mul_(gain)
        for layer in range(spec.num_layers(model.config)):
            if layer != keep:
                out = spec.module(model, "attn_out", layer)
                out.weight.zero_()
                if getattr(out, "bias", None) is not None:
                    out.bias.zero_()


# --- exact restorations ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_a_single_attention_layer_carrying_the_subject_is_found_exactly(arch):
    carrier = 2
    # Where the random carrier barely moves the answer (embeddings scaled up as in Gemma, a norm after the
    # embedding as in BLOOM), it is amplified: the restorations below are exact for any weights.
    for gain in (1.0, 100.0):
        model, spec = random_model(arch)
        silence_attention_except(model, spec, carrier, gain)
        facts = known_facts(model, records_tokenizer(), RECORDS, 3)
        result = causal_trace(model, records_tokenizer(), facts, TraceSettings(samples=3, window=1), progress=False)
        if all(abs(fact.high - fact.low) > 1e-3 * fact.high for fact in result.facts):
            break
    depth = result.num_layers
    assert len(result.facts) == len(facts) == 3
    for fact in result.facts:
        assert abs(fact.high - fact.low) > 1e-3 * fact.high, "the noise must change the answer's probability for this test to say anything"
        first, last = fact.subject_tokens
        end = len(fact.tokens) - 1
        hidden, attn = fact.scores["hidden"], fact.scores["attn"]
        # The last token's state ignores the subject below the carrier, and is all of the answer from it on.
        assert hidden[end] == pytest.approx([fact.low] * carrier + [fact.high] * (depth - carrier), rel=1e-4)
        # The subject's states matter only below the carrier: nothing reads them after it.
        for position in range(first, last + 1):
            assert hidden[position][carrier:] == pytest.approx([fact.low] * (depth - carrier), rel=1e-4)
        # Restoring the carrier's attention output at the last token restores everything; the silent ones nothing.
        assert attn[end] == pytest.approx([fact.high if layer == carrier else fact.low for layer in range(depth)], rel=1e-4)
    expected = [result.total_effect if layer == carrier else 0.0 for layer in range(depth)]
    assert result.effects("attn")["last"] == pytest.approx(expected, abs=1e-6)


def test_scores_match_runs_without_hooks_for_nothing_restored_and_for_the_top_layer_restored():
    model, spec = random_model("llama", seed=1)
    tok = records_tokenizer()
    settings = TraceSettings(samples=4, kinds=("hidden",), token_kinds=("last",))
    result = causal_trace(model, tok, known_facts(model, tok, RECORDS, 1), settings, progress=False)
    fact = result.facts[0]
    ids = torch.tensor([tok(fact.prompt)["input_ids"]])
    answer = tok.convert_tokens_to_ids(fact.answer)
    first, last = fact.subject_tokens
    with torch.no_grad():
        clean = model(input_ids=ids).logits[0, -1].softmax(-1)[answer]
        embeds = spec.module(model, "embed")(ids).repeat(settings.samples, 1, 1)
        embeds[:, first: last + 1] += draw_noise(settings, last - first + 1, embeds.shape[-1], result.noise)
        corrupted = model(inputs_embeds=embeds).logits[:, -1].softmax(-1)[:, answer].mean()
    assert fact.high == pytest.approx(float(clean), abs=1e-6)
    assert fact.low == pytest.approx(float(corrupted), abs=1e-6)
    assert fact.scores["hidden"][-1][-1] == pytest.approx(fact.high, abs=1e-6)  # the top state of the last token is the output


@pytest.mark.parametrize("arch", ARCHS)
def test_replaying_the_lower_blocks_gives_the_scores_of_full_forward_passes(arch):
    model, _ = random_model(arch, seed=2)
    facts = known_facts(model, records_tokenizer(), RECORDS, 2)
    runs = [causal_trace(model, records_tokenizer(), facts, TraceSettings(samples=2, window=2, replay=replay), progress=False)
            for replay in (True, False)]
    assert runs[0].facts
    for fast, full in zip(*(run.facts for run in runs)):
        for kind in fast.scores:
            for row_fast, row_full in zip(fast.scores[kind], full.scores[kind]):
                assert row_fast == pytest.approx(row_full, abs=1e-5)


def test_facts_the_model_does_not_know_are_skipped_and_counted():
    model, _ = random_model("gpt2")
    tok = records_tokenizer()
    facts = known_facts(model, tok, RECORDS, 2)
    unknown = [{**r, "ground_truth": "nowhere"} for r in RECORDS[10:13]]
    result = causal_trace(model, tok, facts + unknown, TraceSettings(samples=2, kinds=("mlp",), window=2), progress=False)
    assert len(result.facts) == 2
    assert sum(result.skipped.values()) == 3
    assert [f.prompt for f in result.facts] == [f["prompt"] for f in facts]
    limited = causal_trace(model, tok, facts + unknown, TraceSettings(samples=2, kinds=("mlp",), limit=1), progress=False)
    assert len(limited.facts) == 1


def test_facts_without_a_true_answer_are_refused():
    model, _ = random_model("gpt2")
    record = {k: v for k, v in RECORDS[0].items() if k != "ground_truth"}
    with pytest.raises(AdapterkitError, match="true answer"):
        causal_trace(model, records_tokenizer(), [record], progress=False)


# --- averages by token kind -----------------------------------------------------------------------
def synthetic_fact(n_tokens: int, subject: tuple[int, int], rows: dict[int, list[float]], low: float, high: float = 1.0):
    table = [rows.get(p, [None, None]) for p in range(n_tokens)]
    return FactTrace("p", "s", "a", ["t"] * n_tokens, subject, high, low, {"mlp": table})


def test_effects_pool_middle_and_further_tokens_over_facts_and_subtract_the_mean_corrupted_score():
    # fact A: subject 1..3 of 6 tokens (middle 2, after 4, no further token, last 5)
    a = synthetic_fact(6, (1, 3), {1: [.1, .2], 2: [.3, .4], 3: [.5, .6], 4: [.7, .8], 5: [.9, 1.]}, low=.1)
    # fact B: subject 0..2 of 7 tokens (middle 1, after 3, further 4 and 5, last 6)
    b = synthetic_fact(7, (0, 2), {0: [.2, .1], 1: [.4, .2], 2: [.6, .3], 3: [.8, .4], 4: [.1, .5], 5: [.3, .7], 6: [.5, .9]}, low=.3)
    result = TraceResult(TraceSettings(kinds=("mlp",)), 2, 1.0, [a, b])
    effects = result.effects("mlp")
    low = (.1 + .3) / 2
    expected = {"subject_first": [(.1 + .2) / 2, (.2 + .1) / 2], "subject_middle": [(.3 + .4) / 2, (.4 + .2) / 2],
                "subject_last": [(.5 + .6) / 2, (.6 + .3) / 2], "first_after": [(.7 + .8) / 2, (.8 + .4) / 2],
                "further": [(.1 + .3) / 2, (.5 + .7) / 2], "last": [(.9 + .5) / 2, (1. + .9) / 2]}
    for token_kind, row in expected.items():
        assert effects[token_kind] == pytest.approx([v - low for v in row]), token_kind
    assert result.peak("mlp") == 0
    assert result.effects("hidden") == {t: None for t in effects}
    # traced at the last subject token only: a one-token subject's first token is that position, yet not reported
    single = synthetic_fact(3, (0, 0), {0: [.5, .7]}, low=.1)
    only_last = TraceResult(TraceSettings(kinds=("mlp",), token_kinds=("subject_last",)), 2, 1.0, [single]).effects("mlp")
    assert only_last["subject_last"] == pytest.approx([.4, .6]) and only_last["subject_first"] is None


def test_a_trace_survives_its_json(tmp_path):
    model, _ = random_model("llama")
    facts = known_facts(model, records_tokenizer(), RECORDS, 2)
    result = causal_trace(model, records_tokenizer(), facts, TraceSettings(samples=2, window=2), progress=False, model_name="tiny")
    again = read_trace(write_trace(result, tmp_path / "trace.json"))
    assert again.settings == result.settings and again.skipped == result.skipped
    for kind in result.settings.kinds:
        assert again.peak(kind) == result.peak(kind)
        for token_kind, row in result.effects(kind).items():
            assert again.effects(kind)[token_kind] == (None if row is None else pytest.approx(row, abs=1e-5))
    summary = json.loads((tmp_path / "trace.json").read_text())["kinds"]["mlp"]
    assert summary["peak_layer_subject_last"] == result.peak("mlp")
    assert load_trace(tmp_path / "trace.json").num_layers == result.num_layers  # a trace file is read, not traced again


# --- layers for detect ----------------------------------------------------------------------------
def trace_peaking_at(layer: int, depth: int) -> TraceResult:
    fact = synthetic_fact(3, (0, 0), {0: [1.0 if i == layer else 0.0 for i in range(depth)]}, low=0.0)
    fact.scores["mlp"] = [[1.0 if i == layer else 0.0 for i in range(depth)]] + [[None] * depth] * 2
    return TraceResult(TraceSettings(kinds=("mlp",), token_kinds=("subject_last",)), depth, 1.0, [fact])


@pytest.mark.parametrize("peak, rome, memit", [(12, [12], [8, 9, 10, 11, 12]), (2, [2], [0, 1, 2])])
def test_traced_layers_are_the_peak_for_rome_and_a_range_ending_at_it_for_memit(peak, rome, memit):
    spec = get_registry().architecture("llama")  # published: ROME 5 of 32, MEMIT 4-8 of 32
    result = trace_peaking_at(peak, 30)
    assert traced_layers(result, spec, "ROME", [5]) == rome
    assert traced_layers(result, spec, "MEMIT", [4, 5, 6, 7, 8]) == memit


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A saved random LLaMA with a tokenizer, and facts it 'knows' (its own greedy answers)."""
    model, _ = random_model("llama", seed=3)
    model.save_pretrained(tmp_path / "model")
    records_tokenizer().save_pretrained(tmp_path / "model")
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(known_facts(model, records_tokenizer(), RECORDS, 3)))
    return tmp_path / "model", facts


def test_detect_with_a_trace_takes_the_layers_from_the_measured_peak(tiny_checkpoint):
    path, facts = tiny_checkpoint
    result = load_trace(facts, path, progress=False)
    assert len(result.facts) == 3
    peak = result.peak("mlp")
    assert adapterkit.detect(path, "ROME", trace=result)["layers"] == [peak]
    assert adapterkit.detect(path, "MEMIT", trace=result)["layers"] == list(range(max(0, peak - 4), peak + 1))
    assert adapterkit.detect(path, "ROME", trace=facts)["layers"] == [peak]  # traced on the spot, same noise
    with pytest.raises(AdapterkitError, match="no `layers`"):
        adapterkit.detect(path, "MEND", trace=result)
    with pytest.raises(AdapterkitError, match="30 layers"):
        adapterkit.detect(path, "ROME", trace=trace_peaking_at(3, 30))


def test_cli_trace_writes_json_and_heat_maps_and_detect_reads_the_trace(tiny_checkpoint, tmp_path, capsys):
    path, facts = tiny_checkpoint
    out = tmp_path / "trace"
    assert main(["trace", path, "--data", facts, "--out", out, "--samples", "2", "--window", "2"]) == 0
    summary = json.loads((out / "trace.json").read_text())
    assert summary["facts_used"] == 3 and set(summary["kinds"]) == {"hidden", "mlp", "attn"}
    printed = capsys.readouterr()
    assert "peaks at layer" in printed.out
    if importlib.util.find_spec("matplotlib"):  # CI installs the plot extra
        for kind in ("hidden", "mlp", "attn"):
            assert (out / f"trace_{kind}.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert "pip install 'adapterkit[plot]'" in printed.err and not list(out.glob("*.png"))
    hparams_file = tmp_path / "rome.yaml"
    assert main(["detect", path, "--method", "ROME", "--trace", out / "trace.json", "-o", hparams_file]) == 0
    text = hparams_file.read_text()
    assert text.startswith("# layers from causal tracing:")
    assert yaml.safe_load(text)["layers"] == [summary["kinds"]["mlp"]["peak_layer_subject_last"]]
    assert main(["validate", hparams_file, "--model", path]) == 0
    assert main(["detect", path, "--method", "SERAC", "--trace", facts]) == 2


# --- trained models -------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_trace_of_a_subject_recall_fact_model_finds_the_layers_it_recalls_through(fact_models, tmp_path):
    from adapterkit.demo.subject_recall import INTERCHANGE_LAYER

    fact = fact_models("gpt2", recipe="subject_recall")
    records = list(fact.facts.trained[:12])
    result = causal_trace(fact.model, fact.tok, records, TraceSettings(window=1), progress=False)
    assert len(result.facts) >= 0.9 * len(records)  # the model recalls what it was trained on
    assert result.total_effect > 0
    # trained to recall through the last subject token's state after layer INTERCHANGE_LAYER, which the MLPs
    # up to that layer write; the last token's top state is the answer itself
    assert result.peak("mlp") <= INTERCHANGE_LAYER
    assert result.peak("hidden") <= INTERCHANGE_LAYER
    assert result.effects("hidden")["last"][-1] == pytest.approx(result.total_effect, abs=1e-5)
    fact.model.save_pretrained(tmp_path / "model")
    fact.tok.save_pretrained(tmp_path / "model")
    assert adapterkit.detect(tmp_path / "model", "ROME", trace=result)["layers"] == [result.peak("mlp")]


@pytest.mark.slow
def test_smollm2_reads_the_eiffel_tower_from_the_subject_early_and_from_the_last_token_late(smollm2):
    model, tok = smollm2
    fact = {"prompt": "The Eiffel Tower is located in the city of", "subject": "The Eiffel Tower",
            "target_new": "Rome", "ground_truth": "Paris"}
    # "The| E|iffel| Tower": the subject's middle tokens name it; " Tower" alone does not
    settings = TraceSettings(samples=5, kinds=("hidden",), token_kinds=("subject_middle", "last"))
    result = causal_trace(model, tok, [fact], settings, progress=False)
    assert len(result.facts) == 1, "SmolLM2 answers Paris"
    traced = result.facts[0]
    assert traced.high - traced.low > 0.2  # corrupting the subject loses the answer
    effects = result.effects("hidden")
    # the restored final state is the clean run's, computed in another batch shape: equal up to kernel rounding
    assert effects["last"][-1] == pytest.approx(traced.high - traced.low, abs=1e-3)
    # The paper's two sites: the subject's states carry the fact in the early half, the last token's late.
    early, late = slice(0, result.num_layers // 2), slice(result.num_layers // 2, result.num_layers)
    assert max(effects["subject_middle"][early]) > max(effects["subject_middle"][late])
    assert max(effects["last"][late]) > max(effects["last"][early])
