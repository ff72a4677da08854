"""The editing commands end to end on a fact-model checkpoint directory: detect -> stats -> edit -> evaluate."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from adapterkit.checkpoints.loading import load_model
from adapterkit.cli import main
from adapterkit.demo.factmodels import tiny_hparams, write_stats_corpus

from checkpoints import detected_hparams


@pytest.fixture(scope="module")
def fact_model_checkpoint(fact_models, tmp_path_factory):
    """(checkpoint directory, fact model): the gpt2 fact model saved with its tokenizer."""
    fact = fact_models("gpt2")
    path = tmp_path_factory.mktemp("ckpt") / "gpt2-facts"
    fact.model.save_pretrained(path)
    fact.tok.save_pretrained(path)
    return path, fact


def detected(fact_model_checkpoint, method, tmp_path, capsys, **extra):
    path, _ = fact_model_checkpoint
    out = detected_hparams(path, method, tmp_path / f"{method}.yaml", **{**tiny_hparams(method), **extra})
    capsys.readouterr()
    return out


def requests_file(fact, tmp_path, n=2):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(list(fact.facts.trained[:n])))
    return path


def test_edit_writes_an_edited_checkpoint_that_differs_only_where_reported(fact_model_checkpoint, tmp_path, capsys):
    path, fact = fact_model_checkpoint
    hp = detected(fact_model_checkpoint, "ROME", tmp_path, capsys, mom2_adjustment=False)
    assert main(["edit", path, "--hparams", hp, "--requests", requests_file(fact, tmp_path), "--out", tmp_path / "edited"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["edits"] == 2 and len(report["touched"]) == 1
    edited, tok = load_model(tmp_path / "edited")
    original = dict(fact.model.named_parameters())
    changed = [n for n, p in edited.named_parameters() if not torch.equal(p, original[n])]
    assert changed == report["touched"] and tok is not None
    assert main(["edit", path, "--hparams", hp, "--requests", requests_file(fact, tmp_path), "--out", tmp_path / "edited"]) == 2
    assert "exists" in capsys.readouterr().err


def test_deltas_only_then_evaluate_reproduces_the_edit(fact_model_checkpoint, tmp_path, capsys):
    path, fact = fact_model_checkpoint
    hp = detected(fact_model_checkpoint, "ROME", tmp_path, capsys, mom2_adjustment=False)
    deltas = tmp_path / "delta.safetensors"
    assert main(["edit", path, "--hparams", hp, "--requests", requests_file(fact, tmp_path), "--deltas-only", "--out", deltas]) == 0
    edit_report = json.loads(capsys.readouterr().out)
    assert list(load_file(deltas)) and deltas.is_file()
    assert main(["evaluate", path, "--requests", requests_file(fact, tmp_path), "--deltas", deltas]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["efficacy"] == pytest.approx(edit_report["efficacy"])
    assert main(["evaluate", path, "--requests", requests_file(fact, tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["efficacy"] == 0.0  # the saved checkpoint itself is untouched


def test_stats_computes_once_then_reuses(fact_model_checkpoint, tmp_path, capsys):
    path, fact = fact_model_checkpoint
    hp = detected(fact_model_checkpoint, "MEMIT", tmp_path, capsys, mom2_n_samples=200, mom2_dataset="facts")
    corpus = write_stats_corpus(fact, tmp_path / "corpus.txt")
    args = ["stats", path, "--hparams", hp, "--corpus", corpus, "--stats-dir", tmp_path / "stats"]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()
    layers = yaml.safe_load(hp.read_text())["layers"]
    assert len(first) == len(layers)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "stats").rglob("*") if p.is_file()}
    assert main(args) == 0
    again = capsys.readouterr()
    assert again.out.splitlines() == first
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for line in first:  # "MODULE: PATH", each reuse said on stderr with where the file came from
        module, _, path = line.partition(": ")
        assert f"adapterkit: reusing {path} for {module.removeprefix('layer ')}: computed from corpus {corpus}" in again.err


def test_stats_import_adopts_an_easyedit_file_that_the_edit_then_uses_and_reports(fact_model_checkpoint, tmp_path, capsys):
    import hashlib

    import numpy as np

    from adapterkit.editing import stats
    from adapterkit.arch.registry import get_registry

    path, fact = fact_model_checkpoint
    hp = detected(fact_model_checkpoint, "MEMIT", tmp_path, capsys, layers=[1])
    module = yaml.safe_load(hp.read_text())["rewrite_module_tmp"].format(1)
    width = stats._input_width(fact.model, get_registry().for_model(fact.model), module)
    source = tmp_path / "easyedit.npz"
    np.savez(source, **{"mom2.mom2": np.eye(width, dtype=np.float32) * 3, "mom2.count": np.array(3)})
    args = ["stats", "import", source, "--model", path, "--layer", 1, "--stats-dir", tmp_path / "stats"]
    assert main([*args, "--hparams", hp]) == 0
    written = capsys.readouterr().out.strip()
    assert written.endswith(f"wikipedia_stats/{module}_float32_mom2_100000.npz")
    assert stats.read_meta(written)["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert main(["edit", path, "--hparams", hp, "--requests", requests_file(fact, tmp_path), "--stats-dir", tmp_path / "stats"]) == 0
    err = capsys.readouterr().err
    assert f"adapterkit: using {written} for {module}: imported from {source.resolve()} (sha256 " in err
    assert main(args) == 0  # without --hparams: ROME's published statistics settings, the same file name
    assert capsys.readouterr().out.strip() == written
    np.savez(source, **{"mom2.mom2": np.eye(width + 1, dtype=np.float32), "mom2.count": np.array(1)})
    assert main(args) == 2
    assert f"takes {width} inputs" in capsys.readouterr().err


def test_stats_help_still_takes_a_model_and_names_import(capsys):
    with pytest.raises(SystemExit):
        main(["stats", "--help"])
    assert "stats import FILE.npz" in capsys.readouterr().out


def test_edit_with_missing_statistics_names_the_fix(fact_model_checkpoint, tmp_path, capsys):
    path, fact = fact_model_checkpoint
    hp = detected(fact_model_checkpoint, "MEMIT", tmp_path, capsys, stats_dir=str(tmp_path / "none"))
    assert main(["edit", path, "--hparams", hp, "--requests", requests_file(fact, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "adapterkit stats" in err and "mom2_adjustment: false" in err
