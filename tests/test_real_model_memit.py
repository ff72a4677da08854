"""MEMIT and AlphaEdit on a real pretrained model, SmolLM2-135M-Instruct (tests/realmodel.py), with the
hyperparameters `detect` writes for it: one call editing 25 facts the model knows (CI's slice: the first half of
the batch of 50 that benchmarks/RESULTS.md measures). Statistics: 500 documents of CounterFact sentences (every
record's prompts with their true answers, benchmarks/make_stats_corpus.py), standing in for Wikipedia. Targets (the
issue's): efficacy >= .90 and locality >= .90. The floors asserted sit below them; a missed target is an expected
failure that carries the measured numbers. benchmarks/RESULTS.md has eight batches of 50 at MEMIT's settings:
locality .900 on average, .84-.98 per batch, lost almost as often on other records' prompts as on the edited facts'
neighbours, and mostly where the model was unsure; no lambda, layer range, template set, step count or corpus size
tried lifts every batch over .90 without costing efficacy or generalisation.
"""
from __future__ import annotations

import pytest

from adapterkit.editing.metrics import greedy_says
from realmodel import DATA, GGUF, MARKS, check_targets, known_facts

pytestmark = MARKS


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
    """One statistics folder for the module: AlphaEdit reads the second moments MEMIT's test computed."""
    return tmp_path_factory.mktemp("smollm2-stats")


def batch_of_25(smollm2, method: str, stats_dir) -> tuple[dict, dict]:
    import adapterkit
    from adapterkit.arch.detect import detect
    from adapterkit.editing.metrics import summarise

    model, tok = smollm2
    hparams = {**detect(GGUF, method=method), "mom2_corpus": str(DATA / "smollm2_stats_corpus.txt"),
               "mom2_dataset": "counterfact-sentences", "mom2_n_samples": 500, "stats_dir": str(stats_dir)}
    records = known_facts()[:25]
    result = adapterkit.edit(model, tok, records, hparams)
    greedy = [greedy_says(model, tok, r["prompt"], r["target_new"]) for r in records]
    measured = {**summarise(result.metrics), "greedy": sum(greedy) / len(greedy)}
    result.restore()
    return hparams, measured


def test_memit_batch_of_25_with_detected_settings(smollm2, quality, stats_dir):
    hparams, measured = batch_of_25(smollm2, "MEMIT", stats_dir)
    quality(f"SmolLM2-135M MEMIT, 25 edits in one call, lambda {hparams['mom2_update_weight']}", measured)
    assert measured["efficacy"] >= 0.85 and measured["locality"] >= 0.80, measured
    check_targets("MEMIT", measured, {"efficacy": 0.90, "locality": 0.90})


def test_alphaedit_batch_of_25_with_detected_settings(smollm2, quality, stats_dir):
    """AlphaEdit with `detect`'s settings (the published null-space threshold 0.02, L2 10) on the same batch.
    Over eight batches of 50 it averages .985 / .322 / .902 (efficacy / generalisation / locality) against MEMIT's
    .977 / .317 / .900 (benchmarks/RESULTS.md); on the first 25 of them it measured .97 / .27 / .88 on a CPU,
    MEMIT .93 / .27 / .88."""
    hparams, measured = batch_of_25(smollm2, "AlphaEdit", stats_dir)
    quality(f"SmolLM2-135M AlphaEdit, 25 edits in one call, threshold {hparams['nullspace_threshold']}", measured)
    assert measured["efficacy"] >= 0.85 and measured["locality"] >= 0.80, measured
    check_targets("AlphaEdit", measured, {"efficacy": 0.90, "locality": 0.90})
