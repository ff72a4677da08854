"""Edit quality along a stream, on a fact model that knows the facts it edits: 35 of the llama fact model's 50
facts edited in seven batches of 5 through ``EditStream`` and never undone, then every one of the 35 measured
again (retained efficacy and generalisation, teacher-forced) with the 15 facts left unedited as the known facts
whose answers must not move (EasyEdit's locality: their true answers' tokens predicted as before the stream).
Targets (the lifelong-editing issue's, on this scale): retained efficacy >= .90 and known-fact locality >= .80.
"""
from __future__ import annotations

import pytest

from adapterkit.arch.registry import get_registry
from adapterkit.demo.factmodels import tiny_hparams
from adapterkit.editing.metrics import target_predictions, token_accuracy, unchanged_share
from adapterkit.streams import EditStream
from test_locate_edit import corpus_for, hparams, with_stats  # noqa: F401  (corpus_for: a session fixture)

STREAM_TARGETS = {"retained_efficacy": 0.90, "known_fact_locality": 0.80}
EDITED, BATCH = 35, 5
# AlphaEdit's published L2 (10) is for billion-parameter models' keys; at this width it keeps every update near
# zero, so the fact-model stream uses a smaller one (benchmarks/RESULTS.md, "Streams on the fact models").
FACT_MODEL_ALPHAEDIT = {"L2": 0.01}
WHY_ALPHAEDIT_MISSES = (": the fact model's statistics are its own training texts, so the edited subjects' keys lie "
                        "inside the preserved keys' span (median share of a key's energy in the null space: 0.06 % at "
                        "layer 0, 22 % at layer 1), and an update projected there reaches them only by moving the "
                        "known facts")


def run_stream(fact, hp) -> dict:
    edited, known = list(fact.facts.trained[:EDITED]), list(fact.facts.trained[EDITED:])
    known_prompts, known_answers = [r["prompt"] for r in known], [" " + r["ground_truth"] for r in known]
    before = [p for p, _ in target_predictions(fact.model, fact.tok, known_prompts, known_answers)]
    stream = EditStream(fact.model, fact.tok, hp)
    try:
        for lo in range(0, EDITED, BATCH):
            stream.apply(edited[lo: lo + BATCH])
        targets = [" " + r["target_new"] for r in edited]
        after = [p for p, _ in target_predictions(fact.model, fact.tok, known_prompts, known_answers)]
        rephrased = [(r["rephrase_prompt"], " " + r["target_new"]) for r in edited]
        return {
            "retained_efficacy": sum(token_accuracy(fact.model, fact.tok, [r["prompt"] for r in edited], targets)) / EDITED,
            "retained_generalisation": sum(token_accuracy(fact.model, fact.tok, *zip(*rephrased))) / len(rephrased),
            "known_fact_locality": unchanged_share(before, after),
            "carries_state": float(stream.carries_state),
        }
    finally:
        stream.restore(to=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["MEMIT", "AlphaEdit"])
def test_a_stream_keeps_its_earlier_edits_and_the_known_facts(method, fact_models, corpus_for, tmp_path, quality):
    fact = fact_models("llama", recipe="subject_recall")
    hp = hparams(fact.model, get_registry().architecture("llama"), method, **tiny_hparams("MEMIT"))
    if method == "AlphaEdit":
        hp.update(FACT_MODEL_ALPHAEDIT)
    hp = with_stats(hp, corpus_for(fact), tmp_path)
    measured = run_stream(fact, hp)
    quality(f"{method} llama stream, {EDITED} edits in batches of {BATCH}", measured)
    assert measured["carries_state"] == (method == "AlphaEdit")
    assert measured["retained_efficacy"] >= 0.5, measured
    missed = sorted(k for k, v in STREAM_TARGETS.items() if measured[k] < v)
    if missed:
        pytest.xfail(f"{method} stream {measured} misses the targets {STREAM_TARGETS} on {missed}"
                     + (WHY_ALPHAEDIT_MISSES if method == "AlphaEdit" else ""))
