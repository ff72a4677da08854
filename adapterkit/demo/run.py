"""`adapterkit demo`: train a tiny model on the bundled CounterFact facts, edit it, and show the effect.

Everything runs offline on CPU in about a minute: the fact model is cached (``$XDG_CACHE_HOME/adapterkit``)
so a second run starts at the edit.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
import yaml

from ..editing.archive import EDITOR_FILE, settings_digest
from ..editing.metrics import summarise
from ..errors import AdapterkitError


def demo_settings() -> dict:
    return yaml.safe_load(resources.files("adapterkit.demo.data").joinpath("demo.yaml").read_text(encoding="utf-8"))


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "adapterkit" / "demo"


@torch.no_grad()
def greedy_answer(model, tok, prompt: str, max_tokens: int = 3) -> str:
    """The model's own continuation of ``prompt`` (argmax, up to ``max_tokens`` or end of sequence)."""
    ids = torch.tensor([tok(prompt)["input_ids"]])
    new = []
    for _ in range(max_tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
        token = int(logits.argmax())
        if token == tok.eos_token_id:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tok.decode(new).strip()


def demo_hparams(fact, method_name: str, cache_dir: Path, say: Callable[[str], None]) -> dict:
    """What `detect` would write for the fact model, with this size's overrides, editors trained where needed."""
    from ..arch.detect import method_hparams
    from ..arch.registry import get_registry
    from .factmodels import tiny_hparams, write_stats_corpus

    registry = get_registry()
    method = registry.method(method_name)
    spec = registry.for_model(fact.model)
    hp = {**method_hparams(spec, fact.model.config.to_dict(), method, model_name=f"demo-{spec.name}"),
          **tiny_hparams(method.name)}
    if hp.get("mom2_adjustment"):
        corpus = write_stats_corpus(fact, cache_dir / "corpus.txt")
        hp.update(mom2_corpus=str(corpus), mom2_dataset="demo-facts", mom2_n_samples=1000,
                  stats_dir=str(cache_dir / "stats"))
    if method.trainable:
        fact_model_id = Path(fact.model.name_or_path).name  # the fact model's cache key: a retrained model gets a new editor
        archive = cache_dir / "editors" / f"{method.name.lower()}-{fact_model_id}-{settings_digest(hp)}"
        hp["archive"] = str(archive)
        if (archive / EDITOR_FILE).is_file():
            say(f"using the {method.name} editor trained before ({archive})")
            return hp
        say(f"training a {method.name} editor on {len(fact.facts.held_out)} facts the edits do not use ...")
        from ..api import train
        from ..requests import normalise_requests

        held_out = normalise_requests(list(fact.facts.held_out))
        train(fact.model, fact.tok, hp, held_out[8:], archive, val=held_out[:8], progress=True, resume=archive.exists())
    return hp


def run_demo(method: str | None = None, arch: str | None = None, n_edits: int | None = None,
             cache_dir=None, say: Callable[[str], None] = print) -> dict:
    """Edit ``n_edits`` facts a freshly trained fact model knows; print before/after answers and metrics."""
    from .. import api
    from ..arch.registry import get_registry
    from .factmodels import load_or_train

    settings = demo_settings()
    method, arch = (method or settings["method"]).upper(), arch or settings["architecture"]
    n_edits = n_edits or settings["edits"]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    say(f"fact model: {arch} (trained on bundled CounterFact facts until it recalls them; cached in {cache_dir})")
    # locate-then-edit methods rewrite the subject's state, so their fact model recalls through it
    recipe = "plain" if get_registry().method(method).trainable else "subject_recall"
    fact = load_or_train(arch, cache_dir / "fact-models", recipe=recipe, verbose=True)
    if not 0 < n_edits <= len(fact.facts.trained):
        raise AdapterkitError(f"--edits {n_edits}: the fact model knows {len(fact.facts.trained)} facts",
                              fix=f"pass --edits between 1 and {len(fact.facts.trained)}")
    records = list(fact.facts.trained[:n_edits])
    hp = demo_hparams(fact, method, cache_dir, say)
    lengths = [max(len(fact.tok(" " + r[k])["input_ids"]) for k in ("ground_truth", "target_new")) for r in records]
    before = [greedy_answer(fact.model, fact.tok, r["prompt"], n) for r, n in zip(records, lengths)]
    with api.edited(fact.model, fact.tok, records, hp) as result:
        after = [greedy_answer(result.answerer, fact.tok, r["prompt"], n) for r, n in zip(records, lengths)]
        measured = summarise(result.metrics)
    say(f"\n{method} on {arch}, {n_edits} edit(s) in one call:")
    for record, old, new in zip(records, before, after):
        say(f"  {record['prompt']!r}: {old!r} -> {new!r}   (wanted {record['target_new']!r})")
    say("  " + ", ".join(f"{k} {v:.2f}" for k, v in measured.items() if v is not None)
        + "   (efficacy and generalisation: target token accuracy; locality: unrelated answers unchanged)")
    say("leaving the `edited` block undid the edit: the model answers as before, its weights bit for bit the same")
    return measured
