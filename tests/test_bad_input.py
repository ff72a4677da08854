"""Bad input through the CLI: exit 2 with a message naming the file and the fix, no traceback, no output file,
and nothing run before the inputs are checked; then the readers fuzzed with Hypothesis (AdapterkitError only)."""
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from adapterkit.checkpoints.loading import load_model, read_config, read_tensor_index
from adapterkit.cli import main
from adapterkit.errors import AdapterkitError
from adapterkit.requests import check_requests_fit
from adapterkit.settings.hparams import load_settings
from adapterkit.arch.registry import get_registry
from adapterkit.requests import load_requests, normalise_request
from adapterkit.files.safe_load import load_json, load_jsonl, load_yaml

from checkpoints import (detected_hparams, quick_rome_hparams, write_tiny_checkpoint,
                         write_tiny_gpt2_with_word_tokenizer)
from conftest import BUILTIN_ARCHS

POSITIONS = 256
WORDS = "Toko Yasuda , the guitar piano plays is incredible at John Lennon performs on Paris capital of France".split()
REQUEST = {"prompt": "Toko Yasuda , the", "subject": "Toko Yasuda", "target_new": "piano", "ground_truth": "guitar",
           "rephrase_prompt": "Toko Yasuda is incredible at", "locality_prompt": "John Lennon performs on the",
           "locality_ground_truth": "guitar"}
FUZZ = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def request_words_gpt2(tmp_path_factory):
    """An untrained tiny GPT-2 with POSITIONS positions whose tokenizer knows WORDS. GPT-2 for its tied lm-head:
    its checkpoints omit the head, which must not count as missing."""
    return write_tiny_gpt2_with_word_tokenizer(tmp_path_factory.mktemp("bad-input") / "gpt2", [" ".join(WORDS)],
                                               POSITIONS)


@pytest.fixture
def copy(request_words_gpt2, tmp_path):
    """A scratch copy of the checkpoint, free to damage."""
    return Path(shutil.copytree(request_words_gpt2, tmp_path / "ckpt"))


@pytest.fixture
def rome_hparams(request_words_gpt2, tmp_path, capsys):
    out = quick_rome_hparams(request_words_gpt2, tmp_path / "rome.yaml", v_num_grad_steps=2)
    capsys.readouterr()
    return out


def write_requests(tmp_path, *records) -> Path:
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(list(records) or [REQUEST]))
    return path


def refused(capsys, args, *expected, out: Path | None = None) -> str:
    """Run the CLI, assert exit 2, each expected text and a fix in stderr, no traceback, nothing on stdout (no
    report: nothing ran) and no output file."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == "", captured.out
    for text in expected:
        assert str(text) in captured.err, (text, captured.err)
    assert "fix:" in captured.err and "Traceback" not in captured.err
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no partial output either
    return captured.err


def edit_args(path, hparams, requests, out, *extra):
    return ["edit", path, "--hparams", hparams, "--requests", requests, "--out", out, *extra]


def rewrite_weights(path: Path, change) -> None:
    weights = path / "model.safetensors"
    tensors = load_file(weights)
    change(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})


def write_header(path: Path, header, data: bytes = b"") -> None:
    encoded = json.dumps(header).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


# --- weights that do not cover the model --------------------------------------------------------
MLP_OUT = "transformer.h.1.mlp.c_proj.weight"


def test_edit_refuses_weights_missing_a_tensor_and_names_it(copy, rome_hparams, tmp_path, capsys):
    rewrite_weights(copy, lambda t: t.pop(MLP_OUT))
    out = tmp_path / "edited"
    refused(capsys, edit_args(copy, rome_hparams, write_requests(tmp_path), out), MLP_OUT, "missing", "--allow-partial-weights",
            out=out)


def test_allow_partial_weights_is_the_explicit_opt_out(copy):
    rewrite_weights(copy, lambda t: t.pop(MLP_OUT))
    with pytest.raises(AdapterkitError, match="missing"):
        load_model(copy)
    model, _ = load_model(copy, allow_partial=True)
    assert model.get_parameter(MLP_OUT).shape == (256, 64)


@pytest.mark.parametrize("damage, expected", [
    (lambda t: t.__setitem__(MLP_OUT, torch.zeros(3, 3)), f"{MLP_OUT}: checkpoint [3, 3], model [256, 64]"),
    (lambda t: t.__setitem__("transformer.extra.weight", torch.zeros(2)), "transformer.extra.weight"),
])
def test_detect_and_validate_refuse_weights_that_edit_would_load_wrongly(copy, rome_hparams, damage, expected, tmp_path, capsys):
    rewrite_weights(copy, damage)
    out = tmp_path / "again.yaml"
    refused(capsys, ["detect", copy, "-o", out], expected, "--allow-partial-weights", out=out)
    refused(capsys, ["validate", rome_hparams, "--model", copy], expected, "config.json")
    refused(capsys, edit_args(copy, rome_hparams, write_requests(tmp_path), tmp_path / "edited"), expected,
            out=tmp_path / "edited")
    assert main(["detect", copy, "--allow-partial-weights"]) == 0


@pytest.mark.parametrize("arch", BUILTIN_ARCHS)
def test_complete_checkpoints_pass_tied_heads_and_renamed_heads_included(arch, tmp_path):
    path = write_tiny_checkpoint(arch, tmp_path / arch)
    assert main(["detect", path]) == 0
    load_model(path, tokenizer=False)


def test_weights_saved_without_the_base_model_prefix_load_as_transformers_loads_them(copy):
    rewrite_weights(copy, lambda t: t.update({n.removeprefix("transformer."): t.pop(n) for n in list(t)}))
    assert not any(n.startswith("transformer.") for n in load_file(copy / "model.safetensors"))
    model, _ = load_model(copy)
    assert model.get_parameter(MLP_OUT).abs().sum() > 0


# --- documents too large or expanding without bound ---------------------------------------------
def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\nalg_name: ROME\n"


@pytest.mark.parametrize("write, expected", [
    (lambda p: p.write_text(billion_laughs()), "billion laughs"),
    (lambda p: p.write_text("a: &a [1, *a]\n"), "cycle"),
    (lambda p: p.write_text("name: x\nmodules: {" + ", ".join(f"k{i}: v" for i in range(40000)) + "}\n"), "MiB"),
    (lambda p: p.write_text("!!python/object/apply:os.system [echo hi]\n"), "not valid YAML"),
])
def test_validate_refuses_hostile_yaml_fast(tmp_path, capsys, write, expected):
    path = tmp_path / "my-plugin.yaml"
    write(path)
    started = time.perf_counter()
    refused(capsys, ["validate", path], path, expected)
    assert time.perf_counter() - started < 1.0


def test_hparams_and_requests_files_are_bounded_too(request_words_gpt2, rome_hparams, tmp_path, capsys):
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(billion_laughs())
    refused(capsys, edit_args(request_words_gpt2, laughs, write_requests(tmp_path), tmp_path / "e"), laughs, "billion laughs")
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as handle:  # sparse: the size is refused before a byte is read
        handle.truncate(300 << 20)
    started = time.perf_counter()
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, huge, tmp_path / "e"), huge, "300.0 MiB")
    assert time.perf_counter() - started < 1.0


# --- prompts longer than the model's positions ------------------------------------------------------
def test_a_prompt_longer_than_the_positions_is_refused_up_front(request_words_gpt2, rome_hparams, tmp_path, capsys):
    long = dict(REQUEST, prompt="Toko Yasuda , the " + "piano " * 1700)  # 10,000+ characters, 1,700+ tokens
    assert len(long["prompt"]) > 10_000
    requests = write_requests(tmp_path, long)
    out = tmp_path / "edited"
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, requests, out), requests, f"{POSITIONS} positions", "shorten",
            "prompt + target_new", out=out)
    model, tok = load_model(request_words_gpt2)
    started = time.perf_counter()
    with pytest.raises(AdapterkitError, match="context template"):
        check_requests_fit(load_requests(requests), tok, model, get_registry().for_model(model),
                           load_settings(rome_hparams))
    assert time.perf_counter() - started < 1.0
    refused(capsys, ["evaluate", request_words_gpt2, "--requests", requests], requests, f"{POSITIONS} positions")


# --- damaged files: messages, not tracebacks ----------------------------------------------------
def _set_config(path: Path, **values):
    config = json.loads((path / "config.json").read_text())
    config.update(values)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, expected", [
    (lambda p: write_header(p, [1, 2, 3]), "a JSON list, not an object"),
    (lambda p: write_header(p, {"w": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4), "shape None"),
    (lambda p: write_header(p, {"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}, b"\0" * 8), "shape ['2']"),
    (lambda p: write_header(p, {"w": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "dtype 5"),
    (lambda p: os.truncate(p / "model.safetensors", (p / "model.safetensors").stat().st_size // 2), "truncated"),
    (lambda p: (p / "config.json").write_bytes(bytes(range(256)) * 4), "not UTF-8"),
    (lambda p: _set_config(p, n_layer="4"), "n_layer is '4'"),
    (lambda p: _set_config(p, n_layer=-4), "n_layer is -4"),
    (lambda p: _set_config(p, n_layer=True), "n_layer is True"),
    (lambda p: _set_config(p, n_layer=10 ** 9), "more layers"),
    (lambda p: _set_config(p, architectures="GPT2LMHeadModel", model_type=None), "not a list"),
])
def test_damaged_checkpoints_give_messages(copy, rome_hparams, tmp_path, capsys, damage, expected):
    damage(copy)
    out = tmp_path / "hp.yaml"
    refused(capsys, ["detect", copy, "-o", out], expected, copy, out=out)
    edited = tmp_path / "edited"
    refused(capsys, edit_args(copy, rome_hparams, write_requests(tmp_path), edited), expected, copy, out=edited)


def test_binary_requests_file(request_words_gpt2, rome_hparams, tmp_path, capsys):
    for name in ("edits.json", "edits.jsonl"):
        requests = tmp_path / name
        requests.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
        refused(capsys, edit_args(request_words_gpt2, rome_hparams, requests, tmp_path / "e"), requests, "not UTF-8")


@pytest.mark.parametrize("record, expected", [
    ({**REQUEST, "rephrase_prompt": 5}, "'rephrase_prompt' must be a string or a list"),
    ({"requested_rewrite": "x"}, "'requested_rewrite' must be an object"),
    ({"requested_rewrite": {**REQUEST}, "neighborhood_prompts": 3}, "'neighborhood_prompts'"),
])
def test_requests_of_wrong_types(request_words_gpt2, rome_hparams, tmp_path, capsys, record, expected):
    requests = write_requests(tmp_path, record)
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, requests, tmp_path / "e"), requests, expected)


def test_binary_statistics_corpus(request_words_gpt2, tmp_path, capsys):
    hparams = tmp_path / "memit.yaml"
    assert main(["detect", request_words_gpt2, "--method", "MEMIT", "-o", hparams]) == 0
    for name in ("corpus.txt", "corpus.jsonl"):
        corpus = tmp_path / name
        corpus.write_bytes(b"a line\n" + bytes(range(256)) * 8)
        refused(capsys, ["stats", request_words_gpt2, "--hparams", hparams, "--corpus", corpus, "--stats-dir", tmp_path / "s"],
                corpus, "binary file")


def test_truncated_statistics_are_refused_before_the_edit(request_words_gpt2, tmp_path, capsys):
    hparams = detected_hparams(request_words_gpt2, "ROME", tmp_path / "rome.yaml", mom2_adjustment=True,
                               mom2_n_samples=20, stats_dir=str(tmp_path / "stats"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) + "\n")
    assert main(["stats", request_words_gpt2, "--hparams", hparams, "--corpus", corpus]) == 0
    [npz] = (tmp_path / "stats").rglob("*.npz")
    os.truncate(npz, npz.stat().st_size // 2)
    capsys.readouterr()
    out = tmp_path / "edited"
    err = refused(capsys, edit_args(request_words_gpt2, hparams, write_requests(tmp_path), out), npz, "compute it again", out=out)
    assert "BadZipFile" in err


@pytest.mark.parametrize("change, expected", [
    ({"rewrite_module_tmp": "model.layers.{}.mlp.down_proj", "layer_module_tmp": "model.layers.{}"}, "model.layers.1"),
    ({"lm_head_module": "transformer.lm_head"}, "'transformer.lm_head'"),
    ({"layers": [7]}, "#/layers/0: layer 7 does not exist (GPT2LMHeadModel has 4)"),
])
def test_hparams_that_do_not_fit_the_model_are_refused_before_the_edit(request_words_gpt2, rome_hparams, tmp_path, capsys,
                                                                        change, expected):
    rome_hparams.write_text(yaml.safe_dump({**yaml.safe_load(rome_hparams.read_text()), **change}))
    out = tmp_path / "edited"
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), out), rome_hparams, expected,
            "adapterkit detect", out=out)


def test_an_unwritable_out_is_refused_before_the_edit(request_words_gpt2, rome_hparams, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for extra in ([], ["--deltas-only"]):
        out = blocker / "edited"
        code = main(edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), out, *extra))
        captured = capsys.readouterr()
        assert code == 2 and str(blocker) in captured.err and "fix:" in captured.err
        assert captured.out == ""  # refused before the edit ran
    assert blocker.read_text() == "not a directory"
    existing = tmp_path / "existing"
    existing.mkdir()
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), existing), "already exists", "--overwrite")


# --- checkpoint code never runs -----------------------------------------------------------------
def test_auto_map_and_trust_remote_code_are_ignored(copy, rome_hparams, capsys):
    marker = copy / "MARKER"
    (copy / "modeling_evil.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('MARKER').write_text('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    pass\nclass EvilModel(GPT2LMHeadModel):\n    pass\n")
    auto_map = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel",
                "AutoTokenizer": ["modeling_evil.EvilConfig", None]}
    _set_config(copy, auto_map=auto_map, trust_remote_code=True)
    tok_config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**tok_config, "auto_map": auto_map}))
    assert main(["detect", copy]) == 0
    assert main(["validate", rome_hparams, "--model", copy]) == 0
    model, tok = load_model(copy)
    assert tok is not None and type(model).__module__.startswith("transformers.")
    assert not marker.exists()


# --- fuzzing the readers ------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=8)


def only_adapterkit_errors(call) -> None:
    started = time.perf_counter()
    try:
        call()
    except AdapterkitError:
        pass
    assert time.perf_counter() - started < 2.0


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_document_readers_on_random_bytes(tmp_path, data):
    for name, read in (("doc.yaml", load_yaml), ("doc.json", load_json), ("doc.jsonl", load_jsonl)):
        path = tmp_path / name
        path.write_bytes(data)
        only_adapterkit_errors(lambda: read(path, error=AdapterkitError, what="document"))
    (tmp_path / "edits.json").write_bytes(data)
    only_adapterkit_errors(lambda: load_requests(tmp_path / "edits.json"))


@FUZZ
@given(data=st.data())
def test_fuzz_config_json_truncated_or_with_a_wrong_type_at_any_field(request_words_gpt2, copy, data):
    original = json.loads((request_words_gpt2 / "config.json").read_text())
    if data.draw(st.booleans(), label="truncate"):
        text = json.dumps(original)
        (copy / "config.json").write_text(text[: data.draw(st.integers(0, len(text) - 1), label="cut")])
    else:
        key = data.draw(st.sampled_from(sorted(original)), label="field")
        (copy / "config.json").write_text(json.dumps({**original, key: data.draw(json_values, label="value")}))
    only_adapterkit_errors(lambda: read_config(copy))
    only_adapterkit_errors(lambda: main(["detect", copy]))


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_header_truncated_or_with_a_wrong_type_at_any_field(request_words_gpt2, tmp_path, data):
    weights = (request_words_gpt2 / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8: 8 + length])
    target = tmp_path / "fuzzed"
    target.mkdir(exist_ok=True)
    shutil.copy(request_words_gpt2 / "config.json", target / "config.json")
    choice = data.draw(st.sampled_from(["truncate", "entry", "field"]), label="how")
    if choice == "truncate":
        (target / "model.safetensors").write_bytes(weights[: data.draw(st.integers(0, len(weights) - 1), label="cut")])
    else:
        name = data.draw(st.sampled_from(sorted(header)), label="tensor")
        if choice == "entry":
            header[name] = data.draw(json_values, label="entry")
        else:
            field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]), label="field")
            header[name] = {**header[name], field: data.draw(json_values, label="value")}
        write_header(target, header, weights[8 + length:])
    only_adapterkit_errors(lambda: read_tensor_index(target))


@FUZZ
@given(key=st.sampled_from(sorted(REQUEST) + ["requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
                                               "target_true", "rephrase_prompts", "locality_prompts", "portability",
                                               "locality", "src", "alt", "answers", "loc", "loc_ans"]),
       value=json_values)
def test_fuzz_requests_with_a_wrong_type_at_any_field(key, value):
    only_adapterkit_errors(lambda: normalise_request({**REQUEST, key: value}))
