"""What MEND and SERAC share through adapterkit.train and the archive template: an interrupted run resumes to the
files of an uninterrupted one, and editing without an archive says how to train one."""
import json

import pytest
import torch

import adapterkit
from adapterkit.editing import training
from adapterkit.editing.archive import EDITOR_FILE, read_safetensors
from adapterkit.errors import AdapterkitError, ArchiveError
from adapterkit.methods.mend import MEND
from adapterkit.methods.serac import SERAC
from editors import editor_hparams, split, train_editor

METHODS = [pytest.param(method, id=method.name) for method in (MEND, SERAC)]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_resume_after_interruption_matches_an_uninterrupted_run(method, fact_models, tmp_path):
    fact = fact_models("gpt2")
    short = {"max_iters": 12, "val_every": 4}
    train_editor(method, fact, tmp_path / "whole", **short)
    train_set, val_set, _ = split(fact.facts)
    hp = editor_hparams(fact.model, method.name, **short)

    def train_split_run(hparams, **options):
        return adapterkit.train(fact.model, fact.tok, hparams, train_set, tmp_path / "split", val=val_set,
                                progress=False, **options)

    def interrupt(step, info):
        if step == 10:  # after the checkpoint of step 8
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_split_run(hp, on_step=interrupt)
    with pytest.raises(AdapterkitError, match="already holds a training run"):
        train_split_run(hp)
    with pytest.raises(ArchiveError, match="cannot resume with different hparams"):
        train_split_run({**hp, "lr": 1e-2}, resume=True)
    assert train_split_run(hp, resume=True).step == 12
    for name in (EDITOR_FILE, training.STATE_FILE):
        whole, _ = read_safetensors(tmp_path / "whole" / name)
        resumed, _ = read_safetensors(tmp_path / "split" / name)
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name
    history = json.loads((tmp_path / "split" / training.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == [4, 8, 12]
    assert {"edit/acc_val", "loc/acc_val", "rephrase/acc_val", "ppl/pre_val", "ppl/post_val"} <= history[0].keys()


@pytest.mark.parametrize("method", METHODS)
def test_editing_without_an_archive_says_how_to_train_one(method, fact_models):
    fact = fact_models("gpt2")
    with pytest.raises(ArchiveError, match=f"{method.name} needs a trained editor") as raised:
        adapterkit.edit(fact.model, fact.tok, fact.facts.trained[0], editor_hparams(fact.model, method.name),
                        evaluate=False)
    assert "adapterkit train" in raised.value.fix
