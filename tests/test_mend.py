"""MEND on every registered architecture: gradient factors in each weight layout, edit quality on the small
fact models, archives that load exactly, clear errors; and the training datasets both editors read (what MEND
shares with SERAC, resuming and editing without an archive, is in test_trained_editors.py)."""
import functools
import json

import pytest
import torch
import yaml

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.editing import batches, losses, training
from adapterkit.editing.archive import EDITOR_FILE, read_archive
from adapterkit.editing.datasets import load_training_records
from adapterkit.editing.metrics import summarise
from adapterkit.errors import ArchiveError, RequestError
from adapterkit.demo.facts import counterfact_sample, zsre_sample
from adapterkit.settings.hparams import load_settings
from adapterkit.methods.mend import MEND, MendEditor, MendTask, edit_factors
from adapterkit.settings.methods import MENDSettings
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from checkpoints import random_model, records_tokenizer
from conftest import ARCHS, QUALITY_ARCHS, skip_without_fact_model
from editors import (assert_refused_by_another_architecture, assert_refused_with_changed_hparams, both_localities,
                     editor_hparams, resaved_archive, split, trained_editors_fixture, with_unrelated_facts)
from realmodel import check_targets

mend_hparams = functools.partial(editor_hparams, method="MEND")
trained = trained_editors_fixture(MEND)
UNRELATED_FLOOR = 0.7


# --- gradient factors in every layout ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_identity_editor_reproduces_the_true_gradient(arch):
    """With the networks at their identity start and no normalisation, sum_t delta_t u_t^T is the
    gradient of the edit loss: Conv1D [in, out], Linear [out, in] and fused MLP inputs all line up."""
    skip_without_fact_model(arch)
    model, spec = random_model(arch)
    tok = records_tokenizer()
    settings = load_settings(mend_hparams(model, norm=False, rank=8))
    requests = normalise_requests(counterfact_sample()[:3])
    task = MendTask(model, tok, spec, settings, torch.device("cpu"))
    factors = edit_factors(model, tok, requests, task.editor.names, task.editor.dims, "cpu")
    pseudo = task.editor.eval().pseudo_gradients(factors)
    weights = [model.get_parameter(n) for n in task.editor.names]
    ids, mask, labels = losses.target_labels(tok, [r.prompt for r in requests], [r.target_new for r in requests], "cpu")
    true = torch.autograd.grad(losses.mean_nll(model(input_ids=ids, attention_mask=mask).logits, labels), weights)
    for name, weight, grad in zip(task.editor.names, weights, true):
        assert spec.as_stored(pseudo[name]).shape == weight.shape
        torch.testing.assert_close(spec.as_stored(pseudo[name]), grad, rtol=1e-4, atol=1e-6, msg=name)


def test_weights_of_one_shape_share_a_network_with_their_own_scale_and_shift():
    spec = get_registry().architecture("llama")
    shapes = {"a.weight": [172, 64], "b.weight": [172, 64], "c.weight": [64, 172]}  # gate, up: [out, in]
    editor = MendEditor(shapes, spec, MENDSettings(alg_name="MEND", inner_params=list(shapes), rank=4))
    assert sorted(editor.transforms) == ["172x64", "64x172"]
    assert editor.mode_of == {"a.weight": 0, "b.weight": 1, "c.weight": 0}
    assert editor.transforms["64x172"].mlp.layers[0].mode_scale.num_embeddings == 2


# --- edit quality on the fact models ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("arch", QUALITY_ARCHS)
def test_mend_edits_held_out_facts(arch, trained, quality):
    """Efficacy and both localities: CounterFact's neighbourhood prompts (same relation, same answer), as the ROME
    paper measures MEND, and the other held-out facts (other relations), as MEND's paper measures locality on
    unrelated inputs. tiny_hparams.yaml trains locality on unrelated prompts (loc_unrelated, cloc); a one-shot
    update of the last MLPs that flips a fact still flips most of its neighbours, whose last-token MLP inputs point
    the same way, so only the unrelated-fact locality has a target (benchmarks/RESULTS.md, "MEND's two
    localities")."""
    fact, hp = trained(arch)
    _, _, test = split(fact.facts)
    rows = []
    for record in with_unrelated_facts(test):
        with adapterkit.edited(fact.model, fact.tok, record, hp) as result:
            rows += result.metrics
            assert sorted(result.touched) == sorted(hp["inner_params"])
    measured = both_localities(summarise(rows))
    quality(f"MEND {arch}", measured)
    assert all(row["pre"]["rewrite_acc"] == 0.0 for row in rows)  # the new targets were not there before
    # floors: most edits land and most unrelated facts stay. Fact models and editors trained on another CPU (or
    # thread count) differ as another seed would, by an edit or two of the 16
    assert measured["efficacy"] >= 0.6 and measured["generalisation"] >= 0.6, measured
    assert measured["unrelated_locality"] >= UNRELATED_FLOOR, measured
    check_targets(f"MEND {arch}", measured, {"efficacy": 0.9, "unrelated_locality": 0.85})


def test_early_stopping_on_a_validation_key(fact_models, tmp_path):
    fact = fact_models("gpt2")
    train_set, val_set, _ = split(fact.facts)
    # the base model's perplexity does not move, so after the first validation nothing improves
    hp = mend_hparams(fact.model, max_iters=40, val_every=2, accumulate_bs=1, early_stop_key="ppl/pre_val",
                      early_stop_patience=4)
    result = adapterkit.train(fact.model, fact.tok, hp, train_set[:8], tmp_path / "run", val=val_set[:2], progress=False)
    assert result.stopped_early and result.step == 6 and result.best_step == 2
    with pytest.raises(adapterkit.errors.AdapterkitError, match="early_stop_key 'edit/accuracy_val' is not a validation metric"):
        adapterkit.train(fact.model, fact.tok, {**hp, "early_stop_key": "edit/accuracy_val"}, train_set[:8], tmp_path / "bad",
                         val=val_set[:2], progress=False)


# --- archives -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_archive_round_trip_and_repeat_edits_are_identical(trained, tmp_path):
    fact, hp = trained("gpt2")
    _, _, test = split(fact.facts)
    _, metadata, _ = read_archive(hp["archive"], "MEND")
    assert metadata["architecture"] == "gpt2" and list(metadata["inner_params"]) == hp["inner_params"]
    copy_path = resaved_archive(MEND, fact, hp, tmp_path)
    deltas = []
    for archive in (hp["archive"], hp["archive"], copy_path):
        with adapterkit.edited(fact.model, fact.tok, test[:2], {**hp, "archive": str(archive)}, evaluate=False) as result:
            deltas.append(result.deltas)
    for other in deltas[1:]:
        assert other.keys() == deltas[0].keys() and all(torch.equal(other[k], deltas[0][k]) for k in other)


@pytest.mark.slow
def test_archive_of_another_architecture_is_refused(trained, fact_models):
    assert_refused_by_another_architecture(trained, fact_models, mend_hparams, "gpt_neox")


@pytest.mark.slow
def test_archive_with_other_inner_params_or_hparams_is_refused(trained):
    _, hp = trained("gpt2")
    assert_refused_with_changed_hparams(trained, {"inner_params": hp["inner_params"][-2:]},
                                        "inner_params do not match: trained on .*transformer.h.1.mlp.c_fc.weight")
    refusal = assert_refused_with_changed_hparams(trained, {"rank": 4}, r"rank=4 \(archive: 1920\)")
    assert "hparams.yaml saved beside the archive" in refusal.fix


def test_a_damaged_archive_is_reported(fact_models, tmp_path):
    fact = fact_models("gpt2")
    (tmp_path / EDITOR_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ArchiveError, match="not a readable safetensors file"):
        adapterkit.edit(fact.model, fact.tok, fact.facts.trained[0], {**mend_hparams(fact.model), "archive": str(tmp_path)},
                        evaluate=False)


def test_edits_with_one_archive_read_it_once_until_it_changes(fact_models, tmp_path, monkeypatch):
    from adapterkit.editing import archive as archives

    fact = fact_models("gpt2")
    train_set, val_set, test = split(fact.facts)
    hp = {**mend_hparams(fact.model, max_iters=2, val_every=2, accumulate_bs=1), "archive": str(tmp_path)}
    adapterkit.train(fact.model, fact.tok, hp, train_set[:8], tmp_path, val=val_set[:2], progress=False)
    reads = []
    monkeypatch.setattr(archives, "read_archive", lambda *a: reads.append(a) or read_archive(*a))
    deltas = []
    for _ in range(2):
        with adapterkit.edited(fact.model, fact.tok, test[:1], hp, evaluate=False) as result:
            deltas.append(result.deltas)
    assert len(reads) == 1 and all(torch.equal(deltas[0][k], deltas[1][k]) for k in deltas[0])
    path = tmp_path / EDITOR_FILE
    path.write_bytes(path.read_bytes())  # written again (as a new training run would): read again
    adapterkit.edit(fact.model, fact.tok, test[:1], hp, evaluate=False).restore()
    other = fact_models("gpt2")  # another model object: its own read and checks
    adapterkit.edit(other.model, other.tok, test[:1], hp, evaluate=False).restore()
    assert len(reads) == 3


# --- adapterkit.train and the datasets -----------------------------------------------------------------
def test_train_reads_both_dataset_formats_and_writes_an_archive_with_the_settings_that_ran(fact_models, tmp_path):
    fact = fact_models("gpt2")
    train_file, val_file = tmp_path / "train.json", tmp_path / "val.jsonl"
    train_file.write_text(json.dumps(counterfact_sample()[48:72]))
    val_file.write_text("\n".join(json.dumps(r) for r in zsre_sample()[:2]))
    hp = mend_hparams(fact.model, max_iters=2, val_every=2, accumulate_bs=1)
    result = adapterkit.train(fact.model, fact.tok, hp, train_file, tmp_path / "out", val=val_file, progress=False)
    assert result.step == 2 and (tmp_path / "out" / EDITOR_FILE).is_file()
    ran = load_settings(hp).to_dict()  # defaults filled in: what ran, not the hparams as given
    assert yaml.safe_load((tmp_path / "out" / training.HPARAMS_FILE).read_text()) == ran
    assert read_archive(tmp_path / "out", "MEND")[1]["hparams"] == ran
    spec = get_registry().for_model(fact.model)
    rome = method_hparams(spec, fact.model.config.to_dict(), get_registry().method("ROME"), "test")
    with pytest.raises(adapterkit.errors.AdapterkitError, match="ROME needs no training"):
        adapterkit.train(fact.model, fact.tok, rome, train_file, tmp_path / "rome")


def test_zsre_and_counterfact_records_become_edit_requests(tmp_path):
    path = tmp_path / "zsre.json"
    path.write_text(json.dumps(zsre_sample()[:3]))
    first = load_training_records(path)[0]
    raw = zsre_sample()[0]
    assert first.prompt == raw["src"] and first.target_new == " " + raw["alt"]
    assert first.ground_truth == " " + raw["answers"][0] and first.rephrase_prompts == (raw["rephrase"],)
    assert first.locality_prompts == (raw["loc"],)  # verbatim, as EasyEdit passes it
    assert load_training_records(path, normalise_loc=True)[0].locality_prompts == (
        "john goodman's character in the big lebowski?",)
    assert first.locality_ground_truths == (" " + raw["loc_ans"],)
    path.write_text(json.dumps(counterfact_sample()[:3]))
    assert load_training_records(path)[0].locality_prompts == (counterfact_sample()[0]["locality_prompt"],)


def test_loc_unrelated_adds_the_same_other_relation_prompts_at_every_step():
    requests = normalise_requests(counterfact_sample()[:30])
    widened = batches.with_unrelated_locality(requests, requests, 2)
    by_prompt = {r.prompt: r for r in requests}
    for before, after in zip(requests, widened):
        kept = len(before.locality_prompts)
        added = after.locality_prompts[kept:]
        assert after.locality_prompts[:kept] == before.locality_prompts and len(added) == 2
        assert all(by_prompt[p].template != before.template for p in added)
        assert after.locality_ground_truths == before.locality_ground_truths + tuple(by_prompt[p].ground_truth for p in added)
    assert widened == batches.with_unrelated_locality(requests, requests, 2)
    assert batches.with_unrelated_locality(requests, requests, 0) == requests


def test_malformed_records_name_file_record_field_and_fix(tmp_path):
    records = zsre_sample()[:4]
    records[2] = {**records[2], "alt": ""}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    with pytest.raises(RequestError, match=r"(?s)train.json: 1 malformed training record.*record #2: zsRE field 'alt' is missing or empty") as raised:
        load_training_records(path)
    assert "skip_malformed" in raised.value.fix
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        assert len(load_training_records(path, skip_malformed=True)) == 3
    cf = counterfact_sample()[:2]
    cf[1] = {k: v for k, v in cf[1].items() if not k.startswith("locality")}
    path.write_text(json.dumps(cf))
    with pytest.raises(RequestError, match=r"record #1: field 'locality_prompt' \(zsRE: 'loc'\) is missing"):
        load_training_records(path)


def test_empty_and_unreadable_datasets_are_refused(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(RequestError, match="empty.json: the dataset is empty") as raised:
        load_training_records(empty)
    assert "give at least one" in raised.value.fix
    with pytest.raises(RequestError, match="no such training file"):
        load_training_records(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"src": ')
    with pytest.raises(RequestError, match=r"broken.json: not valid JSON \(line 1"):
        load_training_records(broken)
    wrong = tmp_path / "text.json"
    wrong.write_text('"x"')
    with pytest.raises(RequestError, match="holds a JSON str; records are a list of objects"):
        load_training_records(wrong)
    one = tmp_path / "object.json"  # one object is one record, as for edit requests
    one.write_text('{"src": "x"}')
    with pytest.raises(RequestError, match=r"object.json record #0: zsRE field 'subject' is missing"):
        load_training_records(one)
