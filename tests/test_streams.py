"""Lifelong editing (adapterkit.streams): batches applied one on top of the last, AlphaEdit's carried keys, restore
bit for bit, save / load / continue bit for bit, kill-safe saves, the refusals, and `adapterkit edit --stream`."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

import adapterkit
from adapterkit.arch.detect import method_hparams
from adapterkit.arch.registry import get_registry
from adapterkit.demo.facts import counterfact_sample
from adapterkit.errors import AdapterkitError, StreamError
from adapterkit.streams import EditStream
from checkpoints import random_model, records_tokenizer

RECORDS = counterfact_sample()
BATCHES = [RECORDS[4 * i: 4 * i + 4] for i in range(3)]


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    """Statistics settings on a corpus of the records (computed once, then read from stats_dir)."""
    root = tmp_path_factory.mktemp("stream-stats")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(r["prompt"] + " " + r["ground_truth"] for r in RECORDS) + "\n")
    return {"mom2_corpus": str(corpus), "stats_dir": str(root / "stats"), "mom2_n_samples": 50, "mom2_dataset": "toy"}


def fresh(method: str, stats: dict, **changes):
    """A random llama-style model (the same weights every call), its tokenizer and fast hparams for ``method``."""
    model, spec = random_model("llama")
    hp = method_hparams(spec, model.config.to_dict(), get_registry().method(method), model_name="stream-test")
    hp.update(layers=[0, 1], context_template_length_params=[], v_num_grad_steps=8, **stats, **changes)
    if method == "AlphaEdit":
        hp.pop("nullspace_threshold"), hp.pop("L2")
        # a random model's statistics set no scale for the threshold: every direction free (P = I); L2 below the
        # keys' squared norms, as the published L2 is for billion-parameter models' keys
        hp = {"nullspace_threshold": 1e9, "L2": 1e-3, **hp, **changes}
    return model, records_tokenizer(), hp


def weights(model) -> dict:
    return copy.deepcopy(model.state_dict())


def assert_same_weights(model, expected: dict):
    state = model.state_dict()
    assert state.keys() == expected.keys()
    different = [n for n, v in state.items() if not torch.equal(v, expected[n])]
    assert not different, f"not bit for bit: {different}"


# --- the method side: AlphaEdit's carried keys ----------------------------------------------------
def test_alphaedit_carries_the_earlier_keys_and_a_later_batch_leaves_their_outputs_alone(stats):
    """The paper's property: with K_p K_p^T in the update, a later batch's Delta barely moves the earlier edits'
    keys (Delta K_p ~ 0), where the same batch edited without them moves them as much as any key."""
    model, tok, hp = fresh("AlphaEdit", stats)
    stream = EditStream(model, tok, hp)
    assert stream.carries_state
    counts = []
    for batch in BATCHES:
        stream.apply(batch)
        counts.append({w: stream.carried.count(w) for w in stream.carried.weights})
    touched = sorted(counts[0])
    assert len(touched) == 2 and [c[touched[0]] for c in counts] == [4, 8, 12]  # grows by each batch's edits

    alone_model, _, alone_hp = fresh("AlphaEdit", stats, stream_preserve_edits=False)
    alone = EditStream(alone_model, tok, alone_hp)
    assert not alone.carries_state
    for batch in BATCHES:
        alone.apply(batch)
    assert alone.carried.weights == []

    for weight in touched:
        earlier = torch.cat([stream.ledger.batches[j].keys()[weight] for j in range(2)]).double()
        own = stream.ledger.batches[2].keys()[weight].double()
        moved = {}
        for name, s in (("carried", stream), ("alone", alone)):
            delta = s.ledger.batches[2].load()["delta/" + weight].double()  # [out, in] in llama's layout
            moved[name] = float((delta @ earlier.T).norm() / (delta @ own.T).norm())
        print(f"{weight}: |Delta_3 K_p| / |Delta_3 K_3| = {moved['carried']:.4f} carried, {moved['alone']:.4f} alone")
        assert moved["carried"] < 0.02 and moved["carried"] < moved["alone"] / 10, moved


def test_memit_preserves_earlier_edits_only_when_asked(stats):
    model, tok, hp = fresh("MEMIT", stats, mom2_update_weight=1e-3)
    assert not EditStream(model, tok, hp).carries_state  # off by default: MEMIT as published
    stream = EditStream(model, tok, {**hp, "stream_preserve_edits": True})
    for batch in BATCHES[:2]:
        stream.apply(batch)
    weight = stream.touched[-1]
    earlier = stream.ledger.batches[0].keys()[weight].double()
    delta = stream.ledger.batches[1].load()["delta/" + weight].double()
    own = stream.ledger.batches[1].keys()[weight].double()
    assert stream.carried.count(weight) == 8
    assert float((delta @ earlier.T).norm() / (delta @ own.T).norm()) < 0.05


def test_the_carried_sums_live_where_carried_on_says_and_a_bad_place_is_refused(stats):
    model, tok, hp = fresh("AlphaEdit", stats)
    with pytest.raises(AdapterkitError) as refused:
        EditStream(model, tok, hp, carried_on="gpu")
    assert "carried_on='gpu'" in refused.value.message and "'device'" in refused.value.fix
    stream = EditStream(model, tok, hp, carried_on="cpu")
    stream.apply(BATCHES[0])
    assert stream.carried.weights and all(stream.carried.keys_moment(w).device.type == "cpu" for w in stream.carried.weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the sums beside weights on an accelerator")
def test_on_a_gpu_the_carried_sums_stay_beside_the_weights_and_rebuild_to_the_same_bits(stats):
    model, tok, hp = fresh("AlphaEdit", stats)
    model.to("cuda")
    stream = EditStream(model, tok, hp)
    for batch in BATCHES[:2]:
        stream.apply(batch)
    sums = {w: stream.carried.keys_moment(w).clone() for w in stream.carried.weights}
    assert all(s.device.type == "cuda" for s in sums.values())
    stream.restore(to=2)  # rebuilt from the kept keys, on the same device
    assert all(torch.equal(stream.carried.keys_moment(w), s) for w, s in sums.items())


# --- restore -------------------------------------------------------------------------------------
def test_restore_goes_back_to_any_batch_bit_for_bit(stats):
    model, tok, hp = fresh("AlphaEdit", stats)
    stream = EditStream(model, tok, hp)
    snapshots = [weights(model)]
    moments = [{}]
    for batch in BATCHES:
        stream.apply(batch)
        snapshots.append(weights(model))
        moments.append({w: stream.carried.keys_moment(w).clone() for w in stream.carried.weights})
    assert len(stream) == 3 and stream.requests_per_batch == [4, 4, 4]
    assert not torch.equal(snapshots[3][stream.touched[0]], snapshots[2][stream.touched[0]])
    stream.restore(to=2)
    assert_same_weights(model, snapshots[2])
    assert len(stream) == 2
    assert all(torch.equal(stream.carried.keys_moment(w), m) for w, m in moments[2].items())  # carried state too
    stream.restore(to=1)
    assert_same_weights(model, snapshots[1])
    stream.apply(BATCHES[1])  # the stream goes on from there as if batches 2 and 3 had never been
    assert_same_weights(model, snapshots[2])
    stream.restore(to=0)
    assert_same_weights(model, snapshots[0])
    assert stream.touched == [] and stream.carried.weights == []
    with pytest.raises(AdapterkitError, match="holds 0 batch"):
        stream.restore(to=1)


# --- save, load, continue ------------------------------------------------------------------------
def test_a_saved_stream_continues_in_another_model_object_bit_for_bit(stats, tmp_path):
    model, tok, hp = fresh("AlphaEdit", stats)
    uninterrupted = EditStream(model, tok, hp)
    for batch in BATCHES:
        uninterrupted.apply(batch)

    first, _, _ = fresh("AlphaEdit", stats)
    stream = EditStream(first, tok, hp)
    stream.apply(BATCHES[0])
    after_one = weights(first)
    stream.apply(BATCHES[1])
    stream.save(tmp_path / "stream")
    manifest = json.loads((tmp_path / "stream" / "manifest.json").read_text())
    assert manifest["format"] == "adapterkit-stream/1" and manifest["batch_count"] == 2
    assert manifest["requests_per_batch"] == [4, 4] and manifest["hparams"]["alg_name"] == "AlphaEdit"
    assert sorted(manifest["model"]["originals"]) == sorted(stream.touched)
    assert all((tmp_path / "stream" / f).is_file() for f in manifest["files"])

    second, _, _ = fresh("AlphaEdit", stats)  # a new process would load the unedited checkpoint so
    loaded = EditStream.load(tmp_path / "stream", second, tok)
    assert_same_weights(second, weights(first))
    assert len(loaded) == 2 and loaded.carried.count(stream.touched[0]) == 8
    loaded.apply(BATCHES[2])
    assert_same_weights(second, weights(model))
    loaded.save(tmp_path / "stream")
    loaded.restore(to=1)  # batches read back from the folder restore exactly too
    assert_same_weights(second, after_one)


def test_an_undo_depth_keeps_the_last_batches_undoable_and_the_same_bits(stats, tmp_path):
    """Folding older batches into a base changes nothing the stream computes: the same weights and carried sums after
    every batch as a stream that keeps them all, in memory and after a save and load; only restore's reach shrinks,
    and the folder holds one base and the last batch's deltas, not every batch's."""
    model, tok, hp = fresh("AlphaEdit", stats)
    whole = EditStream(model, tok, hp)
    snapshots, moments = [weights(model)], [{}]
    for batch in BATCHES:
        whole.apply(batch)
        snapshots.append(weights(model))
        moments.append({w: whole.carried.keys_moment(w).clone() for w in whole.carried.weights})

    folded_model, _, _ = fresh("AlphaEdit", stats)
    stream = EditStream(folded_model, tok, hp, undo_depth=1)
    for number, batch in enumerate(BATCHES, start=1):
        stream.apply(batch)
        assert_same_weights(folded_model, snapshots[number])
        assert all(torch.equal(stream.carried.keys_moment(w), m) for w, m in moments[number].items())
    assert stream.earliest_restorable == 2
    assert [b.folded for b in stream.ledger.batches] == [True, True, False]
    assert not any(name.startswith("delta/") for b in stream.ledger.batches[:2] for name in b.tensors)
    with pytest.raises(AdapterkitError, match=r"batches 1 to 2 are folded.*undo_depth=1") as refused:
        stream.restore(to=1)
    assert "larger undo_depth" in refused.value.fix

    folder = tmp_path / "stream"
    stream.save(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["undo_depth"] == 1 and manifest["base"]["after_batch"] == 2
    assert [b["folded"] for b in manifest["batches"]] == [True, True, False]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.safetensors")) == sorted(manifest["files"])
    assert len([f for f in manifest["files"] if not f.endswith("-keys.safetensors")]) == 2  # the base, batch 3

    other, _, _ = fresh("AlphaEdit", stats)
    loaded = EditStream.load(folder, other, tok)
    assert_same_weights(other, snapshots[3])
    assert loaded.undo_depth == 1 and loaded.earliest_restorable == 2
    assert all(torch.equal(loaded.carried.keys_moment(w), m) for w, m in moments[3].items())
    loaded.restore(to=2)
    assert_same_weights(other, snapshots[2])
    loaded.apply(BATCHES[2])
    assert_same_weights(other, snapshots[3])
    loaded.save(folder)
    assert len(list((folder / "base").iterdir())) == 1  # the earlier base is gone with the manifest that named it

    stream.restore(to=2)
    assert_same_weights(folded_model, snapshots[2])
    assert all(torch.equal(stream.carried.keys_moment(w), m) for w, m in moments[2].items())

    switched, _, _ = fresh("AlphaEdit", stats)  # a depth lowered midway folds what the old depth kept
    stream = EditStream(switched, tok, hp, undo_depth=2)
    stream.apply(BATCHES[0])
    stream.apply(BATCHES[1])
    assert stream.earliest_restorable == 0
    stream.undo_depth = 0
    stream.apply(BATCHES[2])
    assert_same_weights(switched, snapshots[3])
    assert all(torch.equal(stream.carried.keys_moment(w), m) for w, m in moments[3].items())
    assert stream.earliest_restorable == 3 and all(b.folded for b in stream.ledger.batches)


def test_an_undo_depth_of_nothing_keeps_no_deltas_and_a_bad_depth_is_refused(stats, tmp_path):
    model, tok, hp = fresh("MEMIT", stats)
    whole = EditStream(model, tok, hp)
    for batch in BATCHES[:2]:
        whole.apply(batch)
    expected = weights(model)
    other, _, _ = fresh("MEMIT", stats)
    stream = EditStream(other, tok, hp, undo_depth=0)
    for batch in BATCHES[:2]:
        stream.apply(batch)
    assert_same_weights(other, expected)
    stream.save(tmp_path / "stream")
    manifest = json.loads((tmp_path / "stream" / "manifest.json").read_text())
    assert [b["file"] for b in manifest["batches"]] == [None, None]  # MEMIT carries no keys: nothing to keep
    assert not list((tmp_path / "stream" / "batches").glob("*"))
    third, _, _ = fresh("MEMIT", stats)
    EditStream.load(tmp_path / "stream", third, tok)
    assert_same_weights(third, expected)
    for depth in (-1, True, "2"):
        with pytest.raises(AdapterkitError, match="undo_depth"):
            EditStream(third, tok, hp, undo_depth=depth)
        with pytest.raises(AdapterkitError, match="undo_depth"):
            stream.undo_depth = depth  # changing it later is checked the same way
    assert stream.undo_depth == 0


def test_an_interrupted_save_leaves_the_previous_save_loadable(stats, tmp_path, monkeypatch):
    import adapterkit.files.atomic as atomic
    import safetensors.torch

    model, tok, hp = fresh("MEMIT", stats, stream_preserve_edits=True)
    stream = EditStream(model, tok, hp)
    stream.apply(BATCHES[0])
    after_one = weights(model)
    folder = tmp_path / "stream"
    stream.save(folder)
    stream.apply(BATCHES[1])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while the manifest was written")
    monkeypatch.setattr(atomic, "write_text_atomic", killed)  # batch 2's file is written, the manifest is not
    with pytest.raises(KeyboardInterrupt):
        stream.save(folder)
    monkeypatch.undo()

    real_save = safetensors.torch.save_file

    def cut_short(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise OSError("killed while a batch file was written")
    stream.apply(BATCHES[2])
    monkeypatch.setattr(safetensors.torch, "save_file", cut_short)
    with pytest.raises(OSError):
        stream.save(folder)
    monkeypatch.undo()

    other, _, _ = fresh("MEMIT", stats)
    loaded = EditStream.load(folder, other, tok, hp)
    assert len(loaded) == 1
    assert_same_weights(other, after_one)
    stream.save(folder)  # a save that finishes removes what the interrupted ones left
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(f"batches/{p.name}" for p in (folder / "batches").iterdir()) == sorted(manifest["files"])
    assert manifest["batch_count"] == 3


def test_a_folder_of_another_model_or_other_settings_is_refused(stats, tmp_path):
    model, tok, hp = fresh("MEMIT", stats)
    stream = EditStream(model, tok, hp)
    stream.apply(BATCHES[0])
    stream.save(tmp_path / "stream")
    with pytest.raises(StreamError, match="other settings: mom2_update_weight") as other_settings:
        EditStream.load(tmp_path / "stream", random_model("llama")[0], tok, {**hp, "mom2_update_weight": 3.0})
    assert "hparams it was started with" in other_settings.value.fix
    with pytest.raises(StreamError, match="not the weight the stream started from"):
        EditStream.load(tmp_path / "stream", random_model("llama", seed=1)[0], tok)
    with pytest.raises(StreamError, match="another model"):
        EditStream.load(tmp_path / "stream", random_model("gpt2")[0], tok)
    with pytest.raises(StreamError, match="not the weight the stream started from"):
        EditStream.load(tmp_path / "stream", model, tok)  # the edited model: it would get the batches twice
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(AdapterkitError, match="not a stream folder"):
        stream.save(tmp_path / "junk")
    with pytest.raises(StreamError, match="no manifest.json"):
        EditStream.load(tmp_path / "junk", model, tok)


# --- the command line ----------------------------------------------------------------------------
def test_edit_with_stream_twice_accumulates_and_writes_the_whole_stream(fact_models, tmp_path, capsys):
    from adapterkit.checkpoints.loading import load_model
    from adapterkit.cli import main
    from adapterkit.demo.factmodels import tiny_hparams

    fact = fact_models("gpt2")
    path = tmp_path / "gpt2-facts"
    fact.model.save_pretrained(path)
    fact.tok.save_pretrained(path)
    hp = tmp_path / "memit.yaml"
    assert main(["detect", path, "--method", "MEMIT", "-o", hp]) == 0
    hp.write_text(yaml.safe_dump({**yaml.safe_load(hp.read_text()), **tiny_hparams("MEMIT"), "mom2_adjustment": False,
                                  "stream_preserve_edits": True}))
    folder = tmp_path / "stream"
    for i, out in enumerate(("first", "second")):
        requests = tmp_path / f"{out}.json"
        requests.write_text(json.dumps(list(fact.facts.trained[2 * i: 2 * i + 2])))
        capsys.readouterr()
        assert main(["edit", path, "--hparams", hp, "--requests", requests, "--stream", folder, "--out", tmp_path / out]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["stream"]["batches"] == i + 1 and report["stream"]["requests_per_batch"] == [2] * (i + 1)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["batch_count"] == 2 and manifest["carried"] and all(v == 4 for v in manifest["carried"].values())

    base, tok = load_model(path)
    stream = EditStream.load(folder, base, tok)
    second, _ = load_model(tmp_path / "second")
    assert_same_weights(second, weights(base))  # --out holds both batches
    first, _ = load_model(tmp_path / "first")
    stream.restore(to=1)
    assert_same_weights(first, weights(base))

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(hp.read_text()), "mom2_update_weight": 7}))
    capsys.readouterr()
    assert main(["edit", path, "--hparams", other, "--requests", tmp_path / "first.json", "--stream", folder]) == 2
    assert "other settings: mom2_update_weight" in capsys.readouterr().err
    assert json.loads((folder / "manifest.json").read_text())["batch_count"] == 2

    assert main(["edit", path, "--hparams", hp, "--requests", tmp_path / "first.json", "--stream", folder,
                 "--undo-depth", "1"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["batch_count"] == 3 and manifest["undo_depth"] == 1 and manifest["base"]["after_batch"] == 2
    capsys.readouterr()
    assert main(["edit", path, "--hparams", hp, "--requests", tmp_path / "first.json", "--undo-depth", "1"]) == 2
    assert "--undo-depth is a stream's setting" in capsys.readouterr().err


# --- adapterkit eval --sequential ---------------------------------------------------------------------
from test_eval import tiny  # noqa: E402,F401  (the random GPT-2 checkpoint, ROME settings and 4 records)


class Killed(Exception):
    pass


def test_sequential_eval_keeps_the_edits_draws_the_curve_and_resumes(tiny, tmp_path, monkeypatch, capsys):
    import adapterkit.evaluation.rundir as run_module
    from adapterkit.cli import main
    from adapterkit.evaluation.run import EvalSettings, run_eval

    settings = EvalSettings(max_new_tokens=4, fluency_max_new_tokens=4, batch=2, sequential=True, every=2)
    whole = run_eval(tiny.model, tiny.hparams, tiny.data, tmp_path / "whole", settings)
    assert whole["settings"]["mode"] == "sequential" and whole["counts"] == {"requests": 4, "units": 2}
    curve = [json.loads(line) for line in (tmp_path / "whole" / "curve.jsonl").read_text().splitlines()]
    assert [(p["edits"], p["batches"]) for p in curve] == [(2, 1), (4, 2)]
    assert set(curve[1]["metrics"]) >= {"teacher_forced.rewrite_acc", "greedy.rewrite_exact_match",
                                        "teacher_forced.locality_acc"}
    stream_manifest = json.loads((tmp_path / "whole" / "stream" / "manifest.json").read_text())
    assert stream_manifest["requests_per_batch"] == [2, 2]  # kept, never undone
    assert stream_manifest["undo_depth"] == 1 and stream_manifest["base"]["after_batch"] == 1  # the folder stays flat

    real_append = run_module.append_rows

    def killed_before_the_rows(out, rows):
        if rows[0]["unit"] == 1:  # the stream already holds batch 2; its rows never reach the file
            raise Killed
        real_append(out, rows)
    monkeypatch.setattr(run_module, "append_rows", killed_before_the_rows)
    with pytest.raises(Killed):
        run_eval(tiny.model, tiny.hparams, tiny.data, tmp_path / "resumed", settings)
    monkeypatch.undo()
    assert json.loads((tmp_path / "resumed" / "stream" / "manifest.json").read_text())["batch_count"] == 2
    done = []
    resumed = run_eval(tiny.model, tiny.hparams, tiny.data, tmp_path / "resumed", settings,
                       on_unit_done=lambda unit, rows: done.append(unit))
    assert done == [1] and resumed == whole
    for name in ("rows.jsonl", "curve.jsonl", "report.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert "never undone" in (tmp_path / "whole" / "summary.md").read_text()

    assert main(["eval", tiny.model, "--hparams", tiny.hparams, "--data", tiny.data, "--out", tmp_path / "x",
                 "--every", "2"]) == 2
    assert "--sequential is not given" in capsys.readouterr().err
