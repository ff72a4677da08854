"""Shared by the MEND and SERAC tests: which facts an editor trains on, training one per architecture, and the
checks of their archives."""
from pathlib import Path

import pytest
import torch

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.editing.archive import EDITOR_FILE, read_archive, save_archive
from adapterkit.errors import ArchiveError
from adapterkit.demo.factmodels import tiny_hparams
from adapterkit.arch.registry import get_registry
from adapterkit.requests import normalise_requests
from adapterkit.settings.hparams import load_settings


def split(facts):
    """(train, validation, test): the editor trains on records it may see and edits facts the model knows
    and the editor never saw."""
    records = lambda rs: normalise_requests(list(rs))  # noqa: E731
    return (records(facts.held_out) + records(facts.trained[:24]), records(facts.trained[24:32]),
            list(facts.trained[32:48]))


def with_unrelated_facts(records: list[dict]) -> list[dict]:
    """Each record with the other records of other relations (another prompt template) as the locality group
    ``unrelated_facts``: locality as MEND's paper measures it, on inputs unrelated to the edit (the share of their
    answer tokens predicted as before), beside CounterFact's neighbourhood prompts (same relation, same answer)
    that the ROME paper measures."""
    requests = normalise_requests(records)
    return [{**record, "locality": {UNRELATED: [{"prompt": o.prompt, "ground_truth": o.ground_truth.lstrip()}
                                                for o in requests if o.template != request.template]}}
            for record, request in zip(records, requests)]


UNRELATED = "unrelated_facts"


def both_localities(measured: dict) -> dict:
    """``summarise``'s metrics with each locality named by how it was measured."""
    return {"efficacy": measured["efficacy"], "generalisation": measured["generalisation"],
            "neighbourhood_locality": measured["locality"], "unrelated_locality": measured[f"locality/{UNRELATED}"]}


def editor_hparams(model, method: str, **overrides) -> dict:
    """What `detect` writes for ``model``, with the settings for models of this size."""
    spec = get_registry().for_model(model)
    return {**method_hparams(spec, model.config.to_dict(), get_registry().method(method), f"test-{spec.name}"),
            **tiny_hparams(method), **overrides}


def train_editor(method, fact, out_dir, **overrides):
    """(hparams naming the archive, training result) for ``method`` (a TrainedEditMethod class) on ``fact``."""
    train_set, val_set, _ = split(fact.facts)
    hp = editor_hparams(fact.model, method.name, **overrides)
    result = adapterkit.train(fact.model, fact.tok, hp, train_set, out_dir, val=val_set, progress=False)
    return {**hp, "archive": str(out_dir)}, result


def trained_editors_fixture(method):
    """A module fixture ``trained``: arch -> (fact model, hparams with the archive), each architecture trained once."""
    @pytest.fixture(scope="module", name="trained")
    def fixture(fact_models, tmp_path_factory):
        cache = {}

        def get(arch):
            if arch not in cache:
                fact = fact_models(arch)
                cache[arch] = (fact, train_editor(method, fact, tmp_path_factory.mktemp(f"{method.name}-{arch}"))[0])
            return cache[arch]
        return get
    return fixture


def assert_refused_by_another_architecture(trained, fact_models, hparams, other_arch: str) -> None:
    """An archive trained for gpt2 does not load into ``other_arch``'s model, and the message names both."""
    _, hp = trained("gpt2")
    other = fact_models(other_arch)
    with pytest.raises(ArchiveError, match=f"trained for the 'gpt2' architecture; the model is '{other_arch}'"):
        adapterkit.edit(other.model, other.tok, other.facts.trained[0], {**hparams(other.model), "archive": hp["archive"]})


def assert_refused_with_changed_hparams(trained, change: dict, message: str) -> ArchiveError:
    """The gpt2 archive refuses hparams that differ from those it was trained with (``message`` names them),
    before the model is touched; returns the refusal."""
    fact, hp = trained("gpt2")
    before = weights_of(fact.model)
    with pytest.raises(ArchiveError, match=message) as raised:
        adapterkit.edit(fact.model, fact.tok, fact.facts.trained[0], {**hp, **change})
    assert all(torch.equal(p, before[n]) for n, p in fact.model.named_parameters())
    return raised.value


def resaved_archive(method, fact, hp, directory: Path) -> Path:
    """The archive ``hp`` names, loaded into ``method``'s editor for ``fact``'s model and saved again under ``directory``."""
    _, metadata, _ = read_archive(hp["archive"], method.name)
    editor = method().load_editor(hp["archive"], fact.model, get_registry().for_model(fact.model), load_settings(hp))
    path = directory / "copy" / EDITOR_FILE
    save_archive(path, editor, {k: v for k, v in metadata.items() if k not in ("format", "aliases")})
    return path


def weights_of(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}
