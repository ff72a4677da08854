"""MEMIT on a real pretrained model, SmolLM2-135M-Instruct (tests/realmodel.py), with the hyperparameters `detect`
writes for it: one call editing 50 facts the model knows. Statistics: 500 documents of CounterFact sentences
(every record's prompts with their true answers, benchmarks/make_stats_corpus.py), standing in for Wikipedia.
Targets (the issue's): efficacy >= .90 and locality >= .90. The floors asserted sit below them; a missed target is
an expected failure that carries the measured numbers. benchmarks/RESULTS.md has eight batches of 50 at these
settings: locality .900 on average, .84-.98 per batch (this one .89), lost almost as often on other records'
prompts as on the edited facts' neighbours, and mostly where the model was unsure; no lambda, layer range,
template set, step count or corpus size tried lifts every batch over .90 without costing efficacy or
generalisation.
"""
from __future__ import annotations

import pytest

from adapterkit.editing.metrics import greedy_says
from realmodel import DATA, GGUF, MARKS, check_targets, known_facts, load_smollm2

pytestmark = MARKS


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2()


def test_memit_batch_of_50_with_detected_settings(smollm2, quality, tmp_path):
    import adapterkit
    from adapterkit.autodetect import detect
    from adapterkit.editing.metrics import summarise

    model, tok = smollm2
    hparams = {**detect(GGUF, method="MEMIT"), "mom2_corpus": str(DATA / "smollm2_stats_corpus.txt"),
               "mom2_dataset": "counterfact-sentences", "mom2_n_samples": 500, "stats_dir": str(tmp_path)}
    records = known_facts()[:50]
    result = adapterkit.edit(model, tok, records, hparams)
    greedy = [greedy_says(model, tok, r["prompt"], r["target_new"]) for r in records]
    measured = {**summarise(result.metrics), "greedy": sum(greedy) / len(greedy)}
    result.restore()
    quality(f"SmolLM2-135M MEMIT, 50 edits in one call, lambda {hparams['mom2_update_weight']}", measured)
    assert measured["efficacy"] >= 0.85 and measured["locality"] >= 0.80, measured
    check_targets("MEMIT", measured, {"efficacy": 0.90, "locality": 0.90})
