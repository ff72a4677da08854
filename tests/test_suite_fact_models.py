"""The bundled fact models (tests/data/fact_models/): one for every model the suite trains, at its current digest,
loaded read only; a model whose recipe changed is trained, not taken from the bundle."""
import hashlib
import os

import pytest
import torch

from adapterkit.demo import factmodels
from suite_fact_models import BUNDLED, PREBUILT_FACT_MODELS, REFRESH_COMMAND, suite_fact_models


@pytest.fixture(scope="module")
def entries() -> dict[str, str]:
    """label -> the cache entry's name under the current code (nothing is trained to know it)."""
    return {model.label: model.entry() for model in suite_fact_models()}


def file_digests(folder) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_conftest_points_load_or_train_at_the_bundle():
    assert PREBUILT_FACT_MODELS == factmodels.PREBUILT_FACT_MODELS
    assert str(BUNDLED) in os.environ[PREBUILT_FACT_MODELS].split(os.pathsep)


def test_every_fact_model_the_suite_trains_is_bundled_at_its_current_digest(entries):
    missing = {label: entry for label, entry in entries.items()
               if not all((BUNDLED / entry / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))}
    assert not missing, (f"no bundled fact model for {missing} (their recipe changed, or they are new): CI would train "
                         f"them for minutes each. Run `{REFRESH_COMMAND}` (it trains what the test cache lacks) and "
                         f"commit tests/data/fact_models/")


def test_the_bundle_holds_nothing_else(entries):
    stale = sorted({p.name for p in BUNDLED.iterdir()} - set(entries.values()))
    assert not stale, f"tests/data/fact_models/ holds {stale}, which no test loads: run `{REFRESH_COMMAND}`"


def test_a_bundled_model_loads_without_training_and_editing_it_leaves_the_files_alone(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a bundled model was trained")

    monkeypatch.setattr(factmodels, "train_fact_model", no_training)
    entry = factmodels.cache_entry_name("gpt2")
    before = file_digests(BUNDLED / entry)
    first = factmodels.load_or_train("gpt2", tmp_path)
    with torch.no_grad():
        for parameter in first.model.parameters():
            parameter.add_(1.0)  # what an edit in place does, to every weight
    again = factmodels.load_or_train("gpt2", tmp_path)
    assert file_digests(BUNDLED / entry) == before
    assert list(tmp_path.iterdir()) == []  # read from the bundle: nothing written to the cache, not even a lock
    for (name, edited), fresh in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert not torch.equal(edited, fresh), name


def test_a_changed_recipe_is_trained_not_taken_from_the_bundle(tmp_path, monkeypatch):
    class Trained(Exception):
        pass

    def training(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(factmodels, "train_fact_model", training)
    assert (BUNDLED / factmodels.cache_entry_name("gpt2")).is_dir()
    assert not (BUNDLED / factmodels.cache_entry_name("gpt2", seed=1)).exists()
    with pytest.raises(Trained):
        factmodels.load_or_train("gpt2", tmp_path, seed=1)
