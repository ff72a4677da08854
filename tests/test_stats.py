"""Second-moment statistics: values, one early-stopping pass, the cache and its provenance checks, corpora, errors."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from adapterkit.checkpoints.build import build_model
from adapterkit.arch.detect import method_hparams
from adapterkit.settings.hparams import load_settings
from adapterkit.editing import stats
from adapterkit.editing.hooks import trace
from adapterkit.errors import StatsError
from adapterkit.demo.factmodels import build_tokenizer, fact_model_config
from adapterkit.arch.registry import get_registry

pytestmark = pytest.mark.filterwarnings("ignore:.*second moments are singular")  # the toy corpus is tiny on purpose

TEXTS = [
    "Michel Denisot spoke the language French",
    "The capital of France is Paris",
    "Toko Yasuda plays the guitar on stage",
    "Danielle Darrieux was a French actress",
    "The Eiffel Tower is in Paris",
    "Boris Souvarine died in Paris",
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS + ["is a the of in"])


def tiny(arch: str, tok, seed: int = 0):
    spec = get_registry().architecture(arch)
    torch.manual_seed(seed)
    return build_model(fact_model_config(spec, tok), spec).eval(), spec


def hparams_for(model, spec, method="MEMIT", **overrides):
    """The settings of ``method`` for the tiny model: what `detect` writes, with a small toy corpus's statistics."""
    hp = method_hparams(spec, model.config.to_dict(), get_registry().method(method), model_name="tiny")
    hp.update(layers=[0, 2], mom2_n_samples=100, mom2_dataset="toy")
    hp.update(overrides)
    return load_settings(hp)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def manual_moment(model, tok, module, texts):
    """E[k k^T] of ``module``'s input over every token of ``texts``, one text at a time."""
    total, count = 0, 0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]])
        with trace(model, inputs=[module]) as record, torch.no_grad():
            model(input_ids=ids)
        keys = record.inputs[module][0].double()
        total, count = total + keys.T @ keys, count + keys.shape[0]
    return (total / count).float()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_moments_match_a_direct_computation_for_every_layer_in_one_pass(arch, tok, corpus, tmp_path):
    model, spec = tiny(arch, tok)
    hp = hparams_for(model, spec)
    top_layer_calls = []
    top = spec.module(model, "layer", spec.num_layers(model.config) - 1)
    top.register_forward_hook(lambda *args: top_layer_calls.append(1))
    paths = stats.compute_stats(model, tok, hp, spec, corpus, tmp_path / "stats", batch_size=4, progress=False)
    assert top_layer_calls == []  # the pass stopped after the highest requested layer
    assert sorted(paths) == [hp.rewrite_module_tmp.format(layer) for layer in (0, 2)]
    for layer in (0, 2):
        module = hp.rewrite_module_tmp.format(layer)
        expected = manual_moment(model, tok, module, TEXTS)
        got = stats.get_mom2(model, spec, hp, layer, tmp_path / "stats")
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        saved = np.load(paths[module])
        assert int(saved["mom2.count"]) == sum(len(tok(t)["input_ids"]) for t in TEXTS)
        assert json.loads(str(saved["adapterkit.meta"]))["module"] == module


def test_file_layout_is_easyedit_naming(tok, corpus, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    with pytest.warns(UserWarning, match="gave 36 tokens, fewer than the key width.*256.*singular"):
        paths = stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)
    assert list(paths.values()) == [tmp_path / "tiny" / "toy_stats" / "transformer.h.1.mlp.c_proj_float32_mom2_100.npz"]


def test_cache_hits_and_misses(tok, corpus, tmp_path, monkeypatch):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    passes = []
    real = stats._accumulate
    monkeypatch.setattr(stats, "_accumulate", lambda *a, **k: passes.append(a[2]) or real(*a, **k))
    first = stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)
    stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)
    assert len(passes) == 1  # same model, module, corpus, n and dtype: a hit
    stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False, layers=[1, 2])
    assert passes[-1] == ["transformer.h.2.mlp.c_proj"]  # only the missing layer is computed
    stats.compute_stats(model, tok, hp.replace(mom2_n_samples=3), spec, corpus, tmp_path, progress=False)
    stats.compute_stats(model, tok, hp.replace(mom2_dtype="float64"), spec, corpus, tmp_path, progress=False)
    assert len(passes) == 4  # another sample count or dtype is another file
    corpus.write_text("\n".join(TEXTS[:3]) + "\n")
    again = stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)
    assert len(passes) == 5 and again == first  # a changed corpus is recomputed in place
    assert int(np.load(first["transformer.h.1.mlp.c_proj"])["mom2.count"]) == sum(len(tok(t)["input_ids"]) for t in TEXTS[:3])


def test_a_file_from_another_model_is_refused(tok, corpus, tmp_path):
    model, spec = tiny("gpt2", tok, seed=0)
    hp = hparams_for(model, spec, layers=[1])
    stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)
    other, _ = tiny("gpt2", tok, seed=1)  # same shape, other weights, same model_name
    with pytest.raises(StatsError) as caught:
        stats.get_mom2(other, spec, hp, 1, tmp_path)
    message = str(caught.value)
    assert "transformer.h.1.mlp.c_fc.weight differs" in message and "weight_fingerprint" in message and "fix:" in message


def test_an_interrupted_computation_leaves_the_previous_file_and_no_partial_file(tok, corpus, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    path = stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)["transformer.h.1.mlp.c_proj"]
    before = path.read_bytes()
    calls = []

    def fail_on_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    handle = spec.module(model, "mlp_out", 1).register_forward_hook(fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False, force=True, batch_size=2)
    handle.remove()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def easyedit_npz(path: Path, moment_sum: np.ndarray, count: int) -> None:
    """A file as ROME / EasyEdit's layer_stats writes it (runningstats.CombinedStat state dict)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{"constructor": np.array("util.runningstats.CombinedStat(mom2=util.runningstats.SecondMoment())"),
                      "mom2.constructor": np.array("util.runningstats.SecondMoment()"),
                      "mom2.count": np.array(count), "mom2.mom2": moment_sum, "sample_size": np.array(100)})


def test_an_easyedit_file_in_the_stats_dir_is_read_with_a_warning(tok, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    width = 4 * model.config.n_embd
    moment_sum = np.random.default_rng(0).standard_normal((width, width)).astype(np.float32)
    easyedit_npz(tmp_path / "tiny" / "toy_stats" / "transformer.h.1.mlp.c_proj_float32_mom2_100.npz", moment_sum, 40)
    with pytest.warns(UserWarning, match="provenance cannot be verified"):
        got = stats.get_mom2(model, spec, hp, 1, tmp_path)
    torch.testing.assert_close(got, torch.from_numpy(moment_sum / 40))


def test_import_npz_adopts_an_easyedit_file_and_checks_its_width(tok, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    width = 4 * model.config.n_embd
    source = tmp_path / "downloaded.npz"
    easyedit_npz(source, np.eye(width, dtype=np.float32) * 6, 3)
    with pytest.warns(UserWarning, match="provenance"):
        path = stats.import_npz(source, model, spec, hp, 1, tmp_path / "stats")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # imported files carry metadata: no warning any more
        torch.testing.assert_close(stats.get_mom2(model, spec, hp, 1, tmp_path / "stats"), torch.eye(width) * 2)
    assert path.name == "transformer.h.1.mlp.c_proj_float32_mom2_100.npz"
    easyedit_npz(source, np.eye(width + 1, dtype=np.float32), 1)
    with pytest.raises(StatsError, match=f"takes {width} inputs"):
        stats.import_npz(source, model, spec, hp, 1, tmp_path / "stats")


def test_missing_statistics_say_how_to_supply_them(tok, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    with pytest.raises(StatsError) as caught:
        stats.get_mom2(model, spec, hp, 1, tmp_path)
    message = str(caught.value)
    assert "transformer.h.1.mlp.c_proj" in message
    assert "adapterkit stats MODEL --hparams FILE --corpus FILE" in message and "mom2_adjustment: false" in message
    with pytest.raises(StatsError, match="does not exist"):
        stats.compute_stats(model, tok, hp, spec, tmp_path / "nowhere.txt", tmp_path, progress=False)


def test_mom2_corpus_in_the_hparams_computes_missing_statistics_on_first_use(tok, corpus, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1, 2], mom2_corpus=str(corpus), stats_dir=str(tmp_path))
    got = stats.get_mom2(model, spec, hp, 2, tok=tok)
    torch.testing.assert_close(got, manual_moment(model, tok, "transformer.h.2.mlp.c_proj", TEXTS), rtol=1e-4, atol=1e-6)
    assert (tmp_path / "tiny" / "toy_stats" / "transformer.h.1.mlp.c_proj_float32_mom2_100.npz").exists()


def test_corpus_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    (tmp_path / "b.json").write_text('["one", {"text": "two"}]')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "1.txt").write_text("one\nstill one")
    (tmp_path / "docs" / "2.txt").write_text("two")
    assert list(stats.read_corpus(tmp_path / "a.jsonl")) == ["one", "two"]
    assert list(stats.read_corpus(tmp_path / "b.json")) == ["one", "two"]
    assert list(stats.read_corpus(tmp_path / "docs")) == ["one\nstill one", "two"]
    (tmp_path / "bad.jsonl").write_text('{"body": "one"}\n')
    with pytest.raises(StatsError, match="bad.jsonl:1.*\"text\""):
        list(stats.read_corpus(tmp_path / "bad.jsonl"))


def test_parquet_and_saved_datasets_are_read_or_name_the_missing_package(tmp_path):
    path = tmp_path / "c.parquet"
    if _installed("pyarrow"):
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.table({"text": ["one", "two"]}), path)
        assert list(stats.read_corpus(path)) == ["one", "two"]
    else:
        path.write_bytes(b"PAR1")
        with pytest.raises(StatsError, match="needs the `pyarrow` package(.|\\n)*fix: pip install pyarrow"):
            list(stats.read_corpus(path))
    saved = tmp_path / "saved"
    if _installed("datasets"):
        import datasets

        datasets.Dataset.from_dict({"text": ["one", "two"]}).save_to_disk(str(saved))
        assert list(stats.read_corpus(saved)) == ["one", "two"]
    else:
        saved.mkdir()
        (saved / "dataset_info.json").write_text("{}")
        with pytest.raises(StatsError, match="needs the `datasets` package"):
            list(stats.read_corpus(saved))


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --- folders named after the corpus, and saying which file is used -----------------------------------
def test_statistics_go_to_a_folder_named_after_the_corpus_and_are_found_without_it(tok, corpus, tmp_path, caplog):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1], mom2_dataset="wikipedia")  # the published name says nothing of this corpus
    with caplog.at_level("INFO", logger="adapterkit"):
        path = stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False)["transformer.h.1.mlp.c_proj"]
    assert path == tmp_path / "tiny" / "corpus_stats" / "transformer.h.1.mlp.c_proj_float32_mom2_100.npz"
    assert f"wrote {path} for transformer.h.1.mlp.c_proj: computed from corpus {corpus}, 6 documents on 20" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="adapterkit"), warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified file: no warning
        got = stats.get_mom2(model, spec, hp, 1, tmp_path)  # no corpus named: found in the one *_stats folder
    torch.testing.assert_close(got, manual_moment(model, tok, "transformer.h.1.mlp.c_proj", TEXTS), rtol=1e-4, atol=1e-6)
    assert f"using {path} for transformer.h.1.mlp.c_proj: computed from corpus {corpus}" in caplog.text


def test_easyedit_wikipedia_stats_come_first_and_several_other_corpora_must_be_chosen(tok, corpus, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1], mom2_dataset="wikipedia")
    other = tmp_path / "other.txt"
    other.write_text("\n".join(TEXTS[:2]) + "\n")
    for text in (corpus, other):
        stats.compute_stats(model, tok, hp, spec, text, tmp_path, progress=False)
    with pytest.raises(StatsError) as caught:
        stats.get_mom2(model, spec, hp, 1, tmp_path)
    assert "corpus_stats" in caught.value.message and "other_stats" in caught.value.message
    assert "mom2_dataset" in caught.value.fix and "'corpus'" in caught.value.fix and "'other'" in caught.value.fix
    chosen = stats.get_mom2(model, spec, hp.replace(mom2_dataset="other"), 1, tmp_path)
    torch.testing.assert_close(chosen, manual_moment(model, tok, "transformer.h.1.mlp.c_proj", TEXTS[:2]), rtol=1e-4, atol=1e-6)
    width = 4 * model.config.n_embd
    easyedit_npz(tmp_path / "tiny" / "wikipedia_stats" / "transformer.h.1.mlp.c_proj_float32_mom2_100.npz",
                 np.eye(width, dtype=np.float32) * 4, 2)
    with pytest.warns(UserWarning, match="using .*wikipedia_stats.*UNVERIFIED.*provenance cannot be verified"):
        torch.testing.assert_close(stats.get_mom2(model, spec, hp, 1, tmp_path), torch.eye(width) * 2)


def test_reusing_a_file_without_metadata_is_a_warning(tok, corpus, tmp_path):
    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1])
    width = 4 * model.config.n_embd
    raw = tmp_path / "tiny" / "toy_stats" / "transformer.h.1.mlp.c_proj_float32_mom2_100.npz"
    easyedit_npz(raw, np.eye(width, dtype=np.float32), 1)
    with pytest.warns(UserWarning, match=f"reusing {raw} for transformer.h.1.mlp.c_proj: UNVERIFIED"):
        assert stats.compute_stats(model, tok, hp, spec, corpus, tmp_path, progress=False) == {"transformer.h.1.mlp.c_proj": raw}


def test_import_records_the_source_its_sha256_and_the_date(tok, tmp_path, caplog):
    import hashlib

    model, spec = tiny("gpt2", tok)
    hp = hparams_for(model, spec, layers=[1], mom2_dataset="wikipedia")
    width = 4 * model.config.n_embd
    source = tmp_path / "downloaded.npz"
    easyedit_npz(source, np.eye(width, dtype=np.float32), 1)
    with pytest.warns(UserWarning, match="provenance"):
        path = stats.import_npz(source, model, spec, hp, 1, tmp_path / "stats")
    assert path.parent == tmp_path / "stats" / "tiny" / "wikipedia_stats"  # EasyEdit's layout
    meta = stats.read_meta(path)
    assert meta["imported_from"] == str(source.resolve()) and meta["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["created"].startswith("20") and meta["layer"] == 1
    with caplog.at_level("INFO", logger="adapterkit"):
        stats.get_mom2(model, spec, hp, 1, tmp_path / "stats")
    assert f"imported from {source.resolve()} (sha256 {meta['sha256']})" in caplog.text
    with pytest.raises(StatsError, match="layer 9 does not exist"):
        stats.import_npz(source, model, spec, hp, 9, tmp_path / "stats")
