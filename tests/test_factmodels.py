"""Fact models: trained tiny models of every architecture recall their CounterFact facts; random ones do not."""
import shutil
from pathlib import Path

import pytest
import torch

from adapterkit.demo import factmodels
from adapterkit.demo import facts as fact_data
from adapterkit.checkpoints.build import build_model
from adapterkit.editing.metrics import token_accuracy
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from conftest import ARCHS, QUALITY_ARCHS, fact_model_unavailable

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def facts():
    return fact_data.FactSet.from_sample(factmodels.DEFAULT_N_FACTS["plain"])


@pytest.fixture(scope="module")
def tok(facts):
    return factmodels.build_tokenizer(fact_data.record_texts(facts.all))


# --- data -----------------------------------------------------------------------------------------
def test_counterfact_sample_is_short_facts_whose_prompts_name_their_subject():
    records = fact_data.counterfact_sample()
    assert len(records) >= 100
    assert len({r["subject"] for r in records}) == len(records)
    for r in records:
        assert r["subject"] in r["prompt"] and r["subject"] in r["rephrase_prompt"], r
        assert all(1 <= len(r[k].split()) <= 3 for k in ("subject", "target_new", "ground_truth", "locality_ground_truth")), r
    assert len(normalise_requests(records)) == len(records)


def test_every_edit_target_is_an_answer_the_trained_facts_give(facts):
    assert {r["target_new"] for r in facts.all} <= facts.answers()


def test_zsre_sample_is_in_mend_format_with_short_answers():
    records = fact_data.zsre_sample()
    assert len(records) >= 50
    for r in records:
        assert r["subject"] in r["src"] and r["subject"] in r["rephrase"], r
        assert all(1 <= len(text.split()) <= 3 for text in (r["alt"], r["answers"][0], r["loc_ans"])), r


def test_the_package_never_reads_the_shared_data_directory():
    offenders = [p for p in (REPO / "adapterkit").rglob("*.py") if "/work/shared" in p.read_text()]
    assert offenders == []


# --- tokenizer ------------------------------------------------------------------------------------
def test_a_word_after_a_space_tokenises_as_the_word_alone(tok, facts):
    for r in facts.all:
        assert tok(" " + r["target_new"])["input_ids"] == tok(r["target_new"])["input_ids"]
        prompt_ids = tok(r["prompt"])["input_ids"]
        assert tok(r["prompt"] + " " + r["target_new"])["input_ids"][: len(prompt_ids)] == prompt_ids


def test_the_sample_has_no_unknown_words(tok, facts):
    ids = [i for text in fact_data.record_texts(facts.all) for i in tok(text)["input_ids"]]
    assert tok.unk_token_id not in ids
    assert tok.unk_token_id in tok("qwertyuiop")["input_ids"]


def test_tokenizer_round_trips_through_save_pretrained_offline(tok, facts, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    texts = fact_data.fact_corpus(facts.all)
    assert [loaded(t)["input_ids"] for t in texts] == [tok(t)["input_ids"] for t in texts]
    assert (loaded.pad_token, loaded.eos_token) == (tok.pad_token, tok.eos_token)
    assert loaded(texts[0])["input_ids"][-1] == loaded.eos_token_id


# --- trained and random models --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("recipe", factmodels.RECIPES)
@pytest.mark.parametrize("arch", QUALITY_ARCHS)
def test_trained_model_recalls_its_facts(arch, recipe, fact_models):
    model, tok, facts, _ = fact_models(arch, recipe=recipe)
    recall = factmodels.recall(model, tok, facts.trained)
    assert min(recall.values()) >= 0.95, recall


@pytest.mark.slow
@pytest.mark.parametrize("recipe", factmodels.RECIPES)
@pytest.mark.parametrize("arch", QUALITY_ARCHS)
def test_trained_model_answers_every_edit_target_somewhere(arch, recipe, fact_models):
    """Editing makes target_new the answer; the model must already produce that word for some prompt."""
    model, tok, facts, _ = fact_models(arch, recipe=recipe)
    prompts = [r[p] for r in facts.trained for p in ("prompt", "locality_prompt")]
    answers = [" " + r[a] for r in facts.trained for a in ("ground_truth", "locality_ground_truth")]
    recalled = {a.strip() for a, acc in zip(answers, token_accuracy(model, tok, prompts, answers)) if acc == 1.0}
    assert {r["target_new"] for r in facts.trained} <= recalled


@pytest.mark.slow
@pytest.mark.parametrize("arch", QUALITY_ARCHS)
def test_subject_recall_models_answer_from_the_subjects_state_and_plain_ones_do_not(arch, fact_models):
    """Another subject's state at the subject's last token after the interchange layer carries its answer over:
    what ROME, MEMIT and PMET rely on. The plain models read the subject elsewhere, so the swap does little."""
    from adapterkit.arch.registry import get_registry
    from adapterkit.demo.subject_recall import swap_accuracy

    accuracy = {}
    for recipe in factmodels.RECIPES:
        model, tok, facts, _ = fact_models(arch, recipe=recipe)
        accuracy[recipe] = swap_accuracy(model, get_registry().architecture(arch), tok, facts.trained, seed=1)
    # CI's 50-fact models: gpt2 .92, chatglm3 .98, gpt_neox .99, gptj and llama 1.0 (training stops at 8000
    # steps; the first three end short of answering every swap, and their edits meet the targets all the same)
    assert accuracy["subject_recall"] >= 0.9 and accuracy["plain"] < 0.5, accuracy


@pytest.mark.parametrize("arch", ARCHS)
def test_random_model_does_not_recall_the_facts(arch, facts, tok):
    reason = fact_model_unavailable(arch)
    if reason:
        pytest.skip(reason)
    spec = get_registry().architecture(arch)
    torch.manual_seed(0)
    model = build_model(factmodels.fact_model_config(spec, tok), spec).eval()
    recall = factmodels.recall(model, tok, facts.trained)
    assert max(recall.values()) < 0.2, recall


def test_a_cached_model_is_loaded_not_retrained(tmp_path, monkeypatch):
    """The cache alone (no bundled models): the bundled copy stands in for a model trained before."""
    from suite_fact_models import BUNDLED, PREBUILT_FACT_MODELS
    from safetensors.torch import load_file

    arch = QUALITY_ARCHS[0]
    entry = factmodels.cache_entry_name(arch)
    shutil.copytree(BUNDLED / entry, tmp_path / entry)
    monkeypatch.delenv(PREBUILT_FACT_MODELS, raising=False)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model was trained again")

    monkeypatch.setattr(factmodels, "train_fact_model", no_training)
    cached = factmodels.load_or_train(arch, tmp_path)
    assert Path(cached.model.name_or_path) == tmp_path / entry
    saved, state = load_file(tmp_path / entry / "model.safetensors"), cached.model.state_dict()
    assert saved and all(torch.equal(state[name], tensor) for name, tensor in saved.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry]  # no lock or scratch dir left
