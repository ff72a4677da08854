"""The statistics pass for big models: it resumes a killed run from its last checkpoint, with the statistics of an
uninterrupted run bit for bit, never from the checkpoint of another pass; and `adapterkit stats` loads only the
layers up to the deepest edit layer, with the same statistics and the whole model's identity, so that an edit of
the whole model accepts them, and says how many parameters it loaded."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import adapterkit
from adapterkit.checkpoints.first_layers import FULL_DEPTH, parameter_count
from adapterkit.checkpoints.loading import load_first_layers, load_model
from adapterkit.editing import stats
from adapterkit.editing.resume import PassCheckpoint, checkpoint_path
from adapterkit.arch.registry import get_registry
from adapterkit.errors import AdapterkitError
from adapterkit.settings.hparams import load_settings

from checkpoints import detected_hparams, word_tokenizer, write_tiny_checkpoint

SENTENCES = ["The Eiffel Tower is in Paris", "Danielle Darrieux speaks French", "Rome is a city in Italy",
             "The city of Paris is in France", "English is spoken in London", "Italy is a country"]
REQUESTS = [{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": " Rome", "ground_truth": " Paris"}]
DOCUMENTS = 40
BATCH = 2  # 20 batches: more than moments.FOLD_EVERY, so a resumed pass crosses a fold of its float32 partial sums


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread, as the killed command's subprocess (OMP_NUM_THREADS=1) and every xdist worker (conftest): a
    pass resumed in this process adds in the same order as one that ran in the subprocess, bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny four-layer checkpoint with a word tokenizer, MEMIT hparams at layers 0 and 1, a corpus of 40 documents
    of different lengths."""
    root = tmp_path_factory.mktemp("stats-resume")
    path = write_tiny_checkpoint("llama", root / "model", tokenizer=word_tokenizer(SENTENCES))
    hparams = detected_hparams(path, "MEMIT", root / "memit.yaml", layers=[0, 1], v_num_grad_steps=4,
                               context_template_length_params=[[4, 2]])
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(f"{SENTENCES[i % 6]} {SENTENCES[(i * 5) % 6]}"[: 10 + 2 * i] for i in range(DOCUMENTS)) + "\n")
    return {"path": path, "hparams": hparams, "corpus": corpus, "root": root}


def files(folder) -> dict:
    return {p.relative_to(folder): stats.read_npz(p) for p in sorted(folder.rglob("*.npz"))}


def assert_same_statistics(folder, reference) -> None:
    found, expected = files(folder), files(reference)
    assert sorted(found) == sorted(expected) and len(expected) == 2
    for name, one in expected.items():
        assert found[name].count == one.count > 0
        assert found[name].mom2.dtype == one.mom2.dtype and np.array_equal(found[name].mom2, one.mom2), name
        for field in ("config_hash", "weight", "weight_fingerprint", "corpus_id", "documents"):
            assert found[name].meta[field] == one.meta[field], field


def leftovers(folder) -> list[str]:
    """Files beside the statistics: checkpoints, or partials of atomic writes."""
    return sorted(p.name for p in folder.rglob("*_stats/*") if not p.name.endswith(".npz"))


def computed(setup, stats_dir, **options):
    model, tok = load_model(setup["path"])
    settings = load_settings(setup["hparams"])
    spec = get_registry().for_model(model)
    return stats.compute_stats(model, tok, settings, spec, setup["corpus"], stats_dir, progress=False,
                               **{"batch_size": BATCH, **options})


@pytest.fixture(scope="module")
def uninterrupted(setup):
    folder = setup["root"] / "uninterrupted"
    computed(setup, folder, checkpoint_every=0)
    return folder


class Interrupt(Exception):
    pass


def interrupted(setup, stats_dir, monkeypatch, *, at_batch: int, **options):
    """A pass stopped by an exception in its ``at_batch``-th batch, as a kill would stop it there."""
    calls = []
    original = stats._add_batch

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_batch:
            raise Interrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(stats, "_add_batch", failing)
        with pytest.raises(Interrupt):
            computed(setup, stats_dir, **options)


def counting_batches(monkeypatch) -> list:
    calls = []
    original = stats._add_batch
    monkeypatch.setattr(stats, "_add_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def the_checkpoint(stats_dir, rank=0, world=1):
    found = sorted(stats_dir.rglob(f"*.rank{rank}-of-{world}.resume"))
    assert len(found) == 1, found
    return found[0]


def test_an_interrupted_pass_resumes_from_its_checkpoint_with_the_uninterrupted_statistics(setup, uninterrupted, tmp_path,
                                                                                          monkeypatch, caplog):
    # checkpoints after 6, 12 and 18 documents (batches 3, 6, 9: inside the first fold of 16 batches); stopped in batch 11
    interrupted(setup, tmp_path, monkeypatch, at_batch=11, checkpoint_every=5)
    assert files(tmp_path) == {}
    with np.load(the_checkpoint(tmp_path)) as data:
        assert '"done": 18' in str(data["meta"])

    batches = counting_batches(monkeypatch)
    with caplog.at_level("INFO", logger="adapterkit"):
        computed(setup, tmp_path, checkpoint_every=5)
    assert "resuming the statistics pass" in caplog.text and "18 of 40 documents done" in caplog.text
    assert len(batches) == DOCUMENTS // BATCH - 9  # only the batches after the checkpoint ran again
    assert_same_statistics(tmp_path, uninterrupted)
    assert leftovers(tmp_path) == []  # the checkpoint is removed once the files are written


def test_a_killed_command_resumes_and_writes_what_an_uninterrupted_one_writes(setup, tmp_path):
    """`adapterkit stats` killed with SIGKILL in its 8th batch, after a checkpoint, then run again."""
    command = ["stats", str(setup["path"]), "--hparams", str(setup["hparams"]), "--corpus", str(setup["corpus"]),
               "--batch-size", str(BATCH), "--checkpoint-every", "6"]
    killer = textwrap.dedent("""
        import os, signal, sys
        import adapterkit.editing.stats as stats
        from adapterkit.cli import main
        original, calls = stats._add_batch, []
        def killed_in_the_eighth(*args, **kwargs):
            calls.append(1)
            if len(calls) == 8:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        stats._add_batch = killed_in_the_eighth
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    killed = subprocess.run([sys.executable, "-c", killer, *command, "--stats-dir", str(tmp_path / "killed")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with np.load(the_checkpoint(tmp_path / "killed")) as data:
        assert '"done": 12' in str(data["meta"])
    assert files(tmp_path / "killed") == {}

    from adapterkit.cli import main

    assert main([*command, "--stats-dir", str(tmp_path / "killed")]) == 0
    assert main([*command, "--stats-dir", str(tmp_path / "whole"), "--checkpoint-every", "0"]) == 0
    assert_same_statistics(tmp_path / "killed", tmp_path / "whole")
    assert leftovers(tmp_path / "killed") == []


@pytest.mark.parametrize("change", ["batch size", "corpus", "world size"])
def test_a_checkpoint_of_another_pass_is_not_used(setup, uninterrupted, tmp_path, monkeypatch, caplog, change):
    interrupted(setup, tmp_path, monkeypatch, at_batch=6, checkpoint_every=4, **({"batch_size": 4} if change == "batch size" else {}))
    written = the_checkpoint(tmp_path)
    if change == "world size":  # left by a launch of two processes
        written.rename(checkpoint_path(written.with_name(written.name.split(".rank")[0]), 0, 2))
    setup_used = dict(setup)
    if change == "corpus":  # the same documents in another file of the same name: another corpus, the same folder
        corpus = tmp_path / "other" / "corpus.txt"
        corpus.parent.mkdir()
        corpus.write_text(setup["corpus"].read_text())
        setup_used["corpus"] = corpus

    batches = counting_batches(monkeypatch)
    with caplog.at_level("INFO", logger="adapterkit"):
        computed(setup_used, tmp_path, checkpoint_every=0)
    expected = {"batch size": "batch_size 4, not 2", "corpus": "corpus_id",
                "world size": "written by a launch of another number of processes"}[change]
    assert "ignoring" in caplog.text and expected in caplog.text
    assert "resuming" not in caplog.text
    assert len(batches) == DOCUMENTS // BATCH  # from the beginning
    # the checkpoint of another pass at this pass's place is removed with this pass's own; another launch's is left
    assert leftovers(tmp_path) == ([written.name.replace("-of-1.", "-of-2.")] if change == "world size" else [])
    if change == "corpus":
        for one in files(tmp_path).values():
            assert one.meta["corpus"] == str(corpus)
        for name, one in files(uninterrupted).items():
            assert np.array_equal(files(tmp_path)[name].mom2, one.mom2)
    else:
        assert_same_statistics(tmp_path, uninterrupted)


def test_removing_a_checkpoint_removes_what_a_killed_write_of_it_left(tmp_path):
    """A kill inside a checkpoint's write leaves its partial; a resumed pass that writes no further checkpoint
    would otherwise leave it beside the statistics for good."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    checkpoint = PassCheckpoint(tmp_path / "m_float32_mom2_4.npz", {"modules": ["m"], "rank": 1, "world": 2}, 1, 4)
    checkpoint.path.write_bytes(b"checkpoint")
    cut_short, other_rank = (tmp_path / f".{path.name}.{dead.pid}-abcd1234.partial"
                             for path in (checkpoint.path, checkpoint_path(checkpoint.final, 0, 2)))
    cut_short.write_bytes(b"half a checkpoint")
    other_rank.write_bytes(b"half of rank 0's checkpoint")
    checkpoint.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other_rank.name]  # rank 0 removes its own


def test_only_the_layers_up_to_the_deepest_edit_layer_are_loaded_with_the_same_statistics_and_identity(setup, tmp_path, capsys):
    from adapterkit.cli import main

    command = ["stats", str(setup["path"]), "--hparams", str(setup["hparams"]), "--corpus", str(setup["corpus"]),
               "--batch-size", "4"]
    assert main([*command, "--stats-dir", str(tmp_path / "all"), "--all-layers"]) == 0
    assert "parameters" not in capsys.readouterr().err
    assert main([*command, "--stats-dir", str(tmp_path / "first")]) == 0
    report = capsys.readouterr().err
    assert_same_statistics(tmp_path / "first", tmp_path / "all")

    whole, tok = load_model(setup["path"])
    first, _, loaded = load_first_layers(setup["path"], 2, tokenizer=False)
    assert len(first.model.layers) == 2 and getattr(first, FULL_DEPTH) == 4 and first.config.num_hidden_layers == 2
    assert loaded.kept == 2 and loaded.total == 4
    assert loaded.loaded_parameters == parameter_count(first) < loaded.total_parameters == parameter_count(whole)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, whole.state_dict()[name]), name
    assert f"loaded layers 0-1 of 4, {loaded.loaded_parameters / 1000:.2f} k of {loaded.total_parameters / 1000:.2f} k " \
           f"parameters ({100 * loaded.loaded_parameters / loaded.total_parameters:.1f} %)" in report

    # MEMIT on the whole model finds the files (no corpus named: it cannot compute them) and accepts their identity
    result = adapterkit.edit(whole, tok, REQUESTS, {**load_settings(setup["hparams"]).to_dict(),
                                                    "stats_dir": str(tmp_path / "first")}, evaluate=False)
    assert sorted(result.deltas) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert all(torch.isfinite(delta).all() and delta.abs().max() > 0 for delta in result.deltas.values())
    with pytest.raises(AdapterkitError, match="only its first 2 of 4 layers"):
        adapterkit.edit(first, tok, REQUESTS, setup["hparams"], evaluate=False)


def test_where_nothing_lies_above_the_deepest_edit_layer_the_whole_model_is_loaded_and_that_is_said(setup, tmp_path, capsys):
    from adapterkit.cli import main

    top = detected_hparams(setup["path"], "MEMIT", tmp_path / "top.yaml", layers=[1, 3])
    assert main(["stats", str(setup["path"]), "--hparams", str(top), "--corpus", str(setup["corpus"]),
                 "--stats-dir", str(tmp_path / "s"), "--batch-size", "8"]) == 0
    report = capsys.readouterr().err
    assert "loaded the whole model" in report and "the deepest edit layer (3) is the top layer of 4" in report
    model, _, loaded = load_first_layers(setup["path"], 4, tokenizer=False)
    assert not hasattr(model, FULL_DEPTH) and loaded.loaded_parameters == loaded.total_parameters


def test_a_negative_checkpoint_interval_is_refused(setup, tmp_path, capsys):
    from adapterkit.cli import main

    assert main(["stats", str(setup["path"]), "--hparams", str(setup["hparams"]), "--corpus", str(setup["corpus"]),
                 "--stats-dir", str(tmp_path), "--checkpoint-every", "-1"]) == 2
    assert "--checkpoint-every -1" in capsys.readouterr().err


def test_checkpoints_left_beside_written_files_are_removed_when_the_files_are_reused(setup, uninterrupted, tmp_path):
    """A launch killed after the leader wrote the files but before another rank removed its checkpoint (or between
    two files) leaves checkpoints whose pass is over: the next run, finding the files, removes them."""
    import shutil

    folder = tmp_path / "stats"
    shutil.copytree(uninterrupted, folder)
    written = sorted(folder.rglob("*.npz"))
    planted = [checkpoint_path(written[0], 1, 2), checkpoint_path(written[1], 0, 1)]
    for path in planted:
        path.write_bytes(b"a checkpoint of a pass that is over")
    assert len(leftovers(folder)) == 2
    computed(setup, folder)
    assert leftovers(folder) == []
    assert_same_statistics(folder, uninterrupted)
