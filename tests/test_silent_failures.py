"""Inputs that used to pass silently (or end in a traceback) and give a wrong result: each is refused through the
CLI with exit 2, the file or field and the fix named, and nothing written; where nothing was wrong, it works."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from adapterkit import api
from adapterkit.checkpoints.loading import load_model
from adapterkit.cli import main
from adapterkit.errors import AdapterkitError
from adapterkit.methods import rome as rome_module

from test_bad_input import REQUEST, request_words_gpt2, edit_args, refused, rome_hparams, write_requests  # noqa: F401 (fixtures)
from test_stats import easyedit_npz

WIDTH = 256  # the tiny GPT-2's MLP output projection takes 4 x 64 inputs
REWRITE = "transformer.h.{}.mlp.c_proj"


def no_files(directory: Path) -> bool:
    return not directory.exists() or not [p for p in directory.rglob("*") if p.is_file()]


@pytest.fixture
def adjusted_hparams(rome_hparams, tmp_path):
    """ROME with mom2_adjustment, reading statistics from tmp_path/stats."""
    hp = {**yaml.safe_load(rome_hparams.read_text()), "mom2_adjustment": True, "stats_dir": str(tmp_path / "stats")}
    rome_hparams.write_text(yaml.safe_dump(hp))
    return rome_hparams


def edit_layer(hparams: Path) -> int:
    return yaml.safe_load(hparams.read_text())["layers"][0]


# --- 1. non-finite numbers ----------------------------------------------------------------------------
def test_statistics_with_nan_are_refused_on_import(request_words_gpt2, adjusted_hparams, tmp_path, capsys):
    source = tmp_path / "easyedit.npz"
    moment = np.eye(WIDTH, dtype=np.float32)
    moment[3, 5] = np.nan
    easyedit_npz(source, moment, 10)
    layer = edit_layer(adjusted_hparams)
    refused(capsys, ["stats", "import", source, "--model", request_words_gpt2, "--layer", layer, "--hparams", adjusted_hparams],
            source, "non-finite", "compute it again")
    assert no_files(tmp_path / "stats")


def test_statistics_with_nan_are_refused_on_load(request_words_gpt2, adjusted_hparams, tmp_path, capsys):
    layer = edit_layer(adjusted_hparams)
    good = tmp_path / "good.npz"
    easyedit_npz(good, np.eye(WIDTH, dtype=np.float32), 10)
    assert main(["stats", "import", good, "--model", request_words_gpt2, "--layer", layer, "--hparams", adjusted_hparams]) == 0
    [written] = (tmp_path / "stats").rglob("*.npz")
    moment = np.eye(WIDTH, dtype=np.float32)
    moment[0, 0] = np.inf
    easyedit_npz(written, moment, 10)  # the file where the edit looks, replaced by an EasyEdit one with an inf
    capsys.readouterr()
    out = tmp_path / "edited"
    refused(capsys, edit_args(request_words_gpt2, adjusted_hparams, write_requests(tmp_path), out), written, "non-finite", out=out)


def nan_on_call(number: int):
    """A get_mom2 that answers the identity, except on call ``number`` (1-based): a matrix of NaN."""
    calls = []

    def get_mom2(model, spec, settings, layer, *args, **kwargs):
        calls.append(layer)
        width = model.get_submodule(settings.rewrite_module_tmp.format(layer)).weight.shape[0]
        return torch.full((width, width), float("nan")) if len(calls) == number else torch.eye(width)
    return get_mom2


def test_a_nan_update_is_refused_naming_the_request_and_nothing_is_written(request_words_gpt2, adjusted_hparams, tmp_path,
                                                                           capsys, monkeypatch):
    monkeypatch.setattr(rome_module, "get_mom2", nan_on_call(1))
    out = tmp_path / "edited"
    requests = write_requests(tmp_path)
    refused(capsys, edit_args(request_words_gpt2, adjusted_hparams, requests, out), f"{requests} record #0", "non-finite",
            "restored", out=out)
    monkeypatch.setattr(rome_module, "get_mom2", nan_on_call(1))
    deltas = tmp_path / "delta.safetensors"
    refused(capsys, edit_args(request_words_gpt2, adjusted_hparams, requests, deltas, "--deltas-only"), "non-finite", out=deltas)


def test_an_edit_that_meets_a_nan_puts_back_the_weights_it_already_changed(request_words_gpt2, adjusted_hparams, monkeypatch):
    monkeypatch.setattr(rome_module, "get_mom2", nan_on_call(2))  # the first request is edited, the second is not
    model, tok = load_model(request_words_gpt2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    second = dict(REQUEST, prompt="John Lennon performs on the", subject="John Lennon", target_new="piano")
    with pytest.raises(AdapterkitError, match="record #1.*non-finite"):
        api.edit(model, tok, [REQUEST, second], adjusted_hparams, requests_source="record")
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name


def test_a_nan_target_value_is_refused_naming_the_request(request_words_gpt2, rome_hparams, tmp_path, capsys):
    hp = yaml.safe_load(rome_hparams.read_text())
    rome_hparams.write_text(yaml.safe_dump({**hp, "kl_factor": 1e300}))  # finite, but the loss overflows float32
    out = tmp_path / "edited"
    requests = write_requests(tmp_path)
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, requests, out), f"{requests} record #0", "target value",
            "not finite", "kl_factor", out=out)


def test_hparams_holding_nan_or_inf_are_refused_naming_the_key(request_words_gpt2, rome_hparams, tmp_path, capsys):
    hp = yaml.safe_load(rome_hparams.read_text())
    rome_hparams.write_text(yaml.safe_dump({**hp, "clamp_norm_factor": float("nan"), "v_lr": float("inf")}))
    out = tmp_path / "edited"
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), out),
            f"{rome_hparams}#/clamp_norm_factor: nan is not a finite number", f"{rome_hparams}#/v_lr: inf", out=out)
    refused(capsys, ["validate", rome_hparams], "#/clamp_norm_factor", "finite")


def test_deltas_with_nan_are_refused_and_leave_the_model_as_it_was(request_words_gpt2, rome_hparams, tmp_path, capsys):
    deltas = tmp_path / "delta.safetensors"
    assert main(edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), deltas, "--deltas-only")) == 0
    from safetensors import safe_open
    with safe_open(str(deltas), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {n: handle.get_tensor(n) for n in handle.keys()}
    [name] = tensors
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(deltas), metadata=metadata)
    capsys.readouterr()
    refused(capsys, ["evaluate", request_words_gpt2, "--requests", write_requests(tmp_path), "--deltas", deltas], deltas, name,
            "non-finite")
    model, _ = load_model(request_words_gpt2)
    original = model.get_parameter(name).detach().clone()
    with pytest.raises(AdapterkitError, match="non-finite"):
        api.apply_deltas(model, deltas)
    assert torch.equal(model.get_parameter(name), original)


# --- 2. statistics for another layer ----------------------------------------------------------------
def import_args(source, request_words_gpt2, layer, hparams, *extra):
    return ["stats", "import", source, "--model", request_words_gpt2, "--layer", layer, "--hparams", hparams, *extra]


def test_statistics_named_for_another_layer_are_refused_unless_forced(request_words_gpt2, adjusted_hparams, tmp_path, capsys):
    layer = edit_layer(adjusted_hparams)
    other = REWRITE.format(layer + 1)
    source = tmp_path / f"{other}_float32_mom2_100000.npz"  # EasyEdit's name for the next layer's file
    easyedit_npz(source, np.eye(WIDTH, dtype=np.float32), 10)
    refused(capsys, import_args(source, request_words_gpt2, layer, adjusted_hparams), source, f"layer {layer + 1}", other,
            "--force")
    assert no_files(tmp_path / "stats")
    assert main(import_args(source, request_words_gpt2, layer, adjusted_hparams, "--force")) == 0
    [written] = (tmp_path / "stats").rglob("*.npz")
    assert written.name.startswith(REWRITE.format(layer) + "_")
    assert f"layer {layer + 1}" in json.loads(str(np.load(written)["adapterkit.meta"]))["forced_over"]
    capsys.readouterr()
    same = tmp_path / f"{REWRITE.format(layer)}_float32_mom2_100000.npz"
    easyedit_npz(same, np.eye(WIDTH, dtype=np.float32), 10)
    assert main(import_args(same, request_words_gpt2, layer, adjusted_hparams)) == 0  # its own layer: accepted


def test_statistics_named_for_another_module_or_with_other_metadata_are_refused(request_words_gpt2, adjusted_hparams, tmp_path,
                                                                                capsys):
    layer = edit_layer(adjusted_hparams)
    source = tmp_path / f"transformer.h.{layer}.attn.c_proj_float32_mom2_100000.npz"
    easyedit_npz(source, np.eye(WIDTH, dtype=np.float32), 10)
    refused(capsys, import_args(source, request_words_gpt2, layer, adjusted_hparams), source, "the module", "--force")
    plain = tmp_path / "plain.npz"
    easyedit_npz(plain, np.eye(WIDTH, dtype=np.float32), 10)
    assert main(import_args(plain, request_words_gpt2, layer + 1, adjusted_hparams)) == 0
    [imported] = (tmp_path / "stats").rglob("*.npz")  # carries adapterkit metadata naming layer + 1 now
    capsys.readouterr()
    refused(capsys, import_args(imported, request_words_gpt2, layer, adjusted_hparams, "--stats-dir", tmp_path / "again"),
            imported, "metadata", f"layer {layer + 1}")


# --- 3. texts that tokenise to nothing -----------------------------------------------------------------
@pytest.fixture
def cleaning_checkpoint(request_words_gpt2, tmp_path):
    """The checkpoint with a tokenizer whose normaliser drops control characters (as BERT's clean_text does)."""
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    path = Path(shutil.copytree(request_words_gpt2, tmp_path / "cleaning"))
    tok = AutoTokenizer.from_pretrained(path)
    tok.backend_tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                                                  strip_accents=False, lowercase=False)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("change, field", [
    ({"prompt": "\x01\x02", "subject": "\x01\x02"}, "prompt"),
    ({"target_new": "\x01"}, "target_new"),
    ({"rephrase_prompt": "\x01\x02"}, "rephrase_prompt[0]"),
    ({"locality_prompt": "\x7f"}, "locality_prompt[0]"),
])
def test_a_text_that_tokenises_to_nothing_is_refused_up_front(cleaning_checkpoint, rome_hparams, tmp_path, capsys,
                                                             change, field):
    requests = write_requests(tmp_path, dict(REQUEST, **change))
    out = tmp_path / "edited"
    err = refused(capsys, edit_args(cleaning_checkpoint, rome_hparams, requests, out), f"{requests} record #0", field,
                  "gives no tokens", out=out)
    assert "TokenizersBackend" in err or "Tokenizer" in err
    refused(capsys, ["evaluate", cleaning_checkpoint, "--requests", requests], field, "gives no tokens")
    assert main(edit_args(cleaning_checkpoint, rome_hparams, write_requests(tmp_path), out)) == 0  # the others pass


# --- 4. a final norm without parameters -------------------------------------------------------------------
@pytest.fixture(scope="module")
def olmo_checkpoint(tmp_path_factory):
    """A tiny first-version OLMo (its LayerNorms have no parameters), built from a config: nothing downloaded."""
    from transformers import OlmoConfig, OlmoForCausalLM

    from adapterkit.demo.factmodels import build_tokenizer
    from test_bad_input import WORDS

    tok = build_tokenizer([" ".join(WORDS)])
    config = OlmoConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                        num_attention_heads=4, max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = OlmoForCausalLM(config)
    assert not list(model.model.norm.parameters())
    path = tmp_path_factory.mktemp("olmo") / "olmo"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_final_norm_without_parameters_is_detected_validated_and_edited(olmo_checkpoint, tmp_path, capsys):
    hparams = tmp_path / "rome.yaml"
    assert main(["detect", olmo_checkpoint, "-o", hparams]) == 0, capsys.readouterr().err
    hp = yaml.safe_load(hparams.read_text())
    assert hp["ln_f_module"] == "model.norm"
    hparams.write_text(yaml.safe_dump({**hp, "v_num_grad_steps": 2, "context_template_length_params": [[5, 2]]}))
    assert main(["validate", hparams, "--model", olmo_checkpoint]) == 0, capsys.readouterr().err
    capsys.readouterr()
    deltas = tmp_path / "delta.safetensors"
    assert main(edit_args(olmo_checkpoint, hparams, write_requests(tmp_path), deltas, "--deltas-only")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["touched"] == [f"model.layers.{hp['layers'][0]}.mlp.down_proj.weight"]


def test_a_final_norm_template_naming_no_module_is_still_refused(olmo_checkpoint, tmp_path, capsys):
    from adapterkit.arch.detect import check_checkpoint
    from adapterkit.checkpoints.loading import read_config, read_tensor_index
    from adapterkit.arch.registry import get_registry

    config = read_config(olmo_checkpoint)
    spec = get_registry().for_config(config, infer=True)
    wrong = type(spec)({**spec.declaration, "modules": {**spec.declaration["modules"], "ln_f": "model.final_norm"}},
                       source="wrong.yaml")
    with pytest.raises(AdapterkitError, match="'model.final_norm' .role ln_f. matches no tensor"):
        check_checkpoint(wrong, config, read_tensor_index(olmo_checkpoint), where=str(olmo_checkpoint))


# --- 5. zsRE locality questions -------------------------------------------------------------------------------
ZSRE_RECORD = {"src": "Toko Yasuda , the", "subject": "Toko Yasuda", "alt": "piano", "answers": ["guitar"],
               "rephrase": "Toko Yasuda is incredible at", "loc": "nq question: John Lennon performs on the",
               "loc_ans": "guitar"}


@pytest.mark.parametrize("extra, expected", [
    ([], "nq question: John Lennon performs on the"),               # verbatim, as EasyEdit passes it
    (["--normalise-loc"], "John Lennon performs on the?"),
])
def test_zsre_locality_questions_are_kept_verbatim_unless_asked(request_words_gpt2, tmp_path, capsys, monkeypatch, extra,
                                                                expected):
    import adapterkit.requests as inputs

    seen, real = [], inputs.check_requests_fit
    monkeypatch.setattr(inputs, "check_requests_fit", lambda requests, *a, **k: seen.extend(requests) or real(requests, *a, **k))
    assert main(["evaluate", request_words_gpt2, "--requests", write_requests(tmp_path, ZSRE_RECORD), *extra]) == 0
    assert [r.locality_prompts for r in seen] == [(expected,)]


@pytest.mark.parametrize("command", ["edit", "evaluate", "train"])
def test_the_normalise_loc_flag_says_what_it_does(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--normalise-loc" in help_text and "'nq question: '" in help_text and "verbatim" in help_text


# --- 6. formats recognised and not supported ------------------------------------------------------------------
WIKIBIO = {"text": "Toko Yasuda is a Japanese musician .", "labels": "She plays the guitar in Stereolab .",
           "concept": "Toko Yasuda", "locality": {"Relation_Specificity": [{"prompt": "John Lennon performs on the",
                                                                           "ground_truth": ["guitar"]}]}}
SANITATION = {"K_F": [{"question": "What is the capital of France?", "target_new": "I don't know.", "ground_truth": "Paris"}],
              "K_R": [{"question": "What does John Lennon play?", "ground_truth": "guitar"}]}
CKNOWEDIT = {"prompt": "请解释如下成语：画蛇添足", "target_new": "比喻做了多余的事，反而不恰当。", "target_old": "画蛇时添上脚。",
             "rephrase": "画蛇添足是什么意思？", "portability": {}, "locality": {}}


@pytest.mark.parametrize("document, name, fixed", [
    ([WIKIBIO], "WikiBio", "use EasyEdit for WikiBio"),
    (SANITATION, "Sanitation", "prompt (the question"),
    (SANITATION["K_F"], "Sanitation", "prompt (the question"),
    ([CKNOWEDIT], "CKnowEdit", "add a subject field"),
])
def test_formats_recognised_but_not_supported_say_so(request_words_gpt2, rome_hparams, tmp_path, capsys, document, name, fixed):
    requests = tmp_path / "edits.json"
    requests.write_text(json.dumps(document, ensure_ascii=False))
    out = tmp_path / "edited"
    err = refused(capsys, edit_args(request_words_gpt2, rome_hparams, requests, out), requests, name,
                  "adapterkit does not support this format", fixed, out=out)
    assert "is missing" not in err
    mend = tmp_path / "mend.yaml"
    assert main(["detect", request_words_gpt2, "--method", "MEND", "-o", mend]) == 0
    capsys.readouterr()
    refused(capsys, ["train", request_words_gpt2, "--hparams", mend, "--train", requests, "--out", tmp_path / "editor"],
            requests, name, "adapterkit does not support this format", out=tmp_path / "editor")


def test_a_cknowedit_record_given_a_subject_is_read():
    from adapterkit.requests import normalise_request

    request = normalise_request({**CKNOWEDIT, "subject": "画蛇添足"})
    assert request.subject == "画蛇添足" and request.extra["target_old"] == "画蛇时添上脚。"


# --- 7. paths that do not exist here ------------------------------------------------------------------------------
def header(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))


def test_detect_for_easyedit_writes_no_path_that_is_not_there_unmarked(request_words_gpt2, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where EasyEdit's ./hugging_cache/... would be looked for
    serac, alphaedit = tmp_path / "serac.yaml", tmp_path / "alphaedit.yaml"
    assert main(["detect", request_words_gpt2, "--method", "SERAC", "--format", "easyedit", "-o", serac]) == 0
    assert main(["detect", request_words_gpt2, "--method", "AlphaEdit", "--format", "easyedit", "-o", alphaedit]) == 0
    written = yaml.safe_load(serac.read_text())
    assert written["small_name"] is None and written["cls_name"] is None
    assert "hugging_cache" not in json.dumps(written)
    assert "NOT THERE: small_name" in header(serac) and "NOT THERE: cls_name" in header(serac)
    projection = yaml.safe_load(alphaedit.read_text())["P_loc"]
    assert projection != "./null_space_project.pt" and request_words_gpt2.name in projection
    assert f"NOT THERE: P_loc: {projection}" in header(alphaedit)


def test_validate_with_a_model_names_a_model_path_that_is_not_there(request_words_gpt2, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    serac = tmp_path / "serac.yaml"
    assert main(["detect", request_words_gpt2, "--method", "SERAC", "--format", "easyedit", "-o", serac]) == 0
    assert main(["validate", serac, "--model", request_words_gpt2]) == 0
    capsys.readouterr()
    serac.write_text(yaml.safe_dump({**yaml.safe_load(serac.read_text()), "small_name": "./hugging_cache/gpt2",
                                     "cls_name": "./hugging_cache/distilbert-base-cased"}))
    code = main(["validate", serac, "--model", request_words_gpt2])
    err = capsys.readouterr().err
    assert code == 2
    for field in ("small_name", "cls_name"):
        assert f"{serac}#/{field}" in err and f"set {field} to a local checkpoint directory" in err
    assert "'./hugging_cache/gpt2' does not exist here" in err
    (tmp_path / "hugging_cache" / "gpt2").mkdir(parents=True)
    (tmp_path / "hugging_cache" / "distilbert-base-cased").mkdir()
    assert main(["validate", serac, "--model", request_words_gpt2]) == 0


# --- 8. warnings as the CLI's own messages ----------------------------------------------------------------------
def test_warnings_are_printed_as_the_cli_s_messages_without_source_lines(request_words_gpt2, adjusted_hparams, tmp_path):
    import subprocess
    import sys

    source = tmp_path / "plain.npz"
    easyedit_npz(source, np.eye(WIDTH, dtype=np.float32), 10)
    layer = edit_layer(adjusted_hparams)
    run = subprocess.run([sys.executable, "-m", "adapterkit.cli", "stats", "import", str(source), "--model",
                          str(request_words_gpt2), "--layer", str(layer), "--hparams", str(adjusted_hparams)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"adapterkit: warning: importing {source}: its provenance" in run.stderr
    assert "UserWarning" not in run.stderr and ".py:" not in run.stderr and "warnings.warn(" not in run.stderr


# --- 9. a full disk -------------------------------------------------------------------------------------------------
def disk_with_free(monkeypatch, free: int) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))


def no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def partials(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".partial")]


@pytest.fixture
def corpus(tmp_path):
    from test_bad_input import WORDS

    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) + "\n")
    return path


def test_stats_onto_a_full_disk_is_refused_before_the_work(request_words_gpt2, adjusted_hparams, corpus, tmp_path, capsys,
                                                          monkeypatch):
    disk_with_free(monkeypatch, 10_000)  # the tiny model's statistics are 256 x 256 float32: 256 KiB
    err = refused(capsys, ["stats", request_words_gpt2, "--hparams", adjusted_hparams, "--corpus", corpus], tmp_path / "stats",
                  "needs about 256.0 KiB", "9.8 KiB is free")
    assert "second moments" not in err  # refused before the corpus was read
    assert no_files(tmp_path / "stats")


def test_stats_whose_write_runs_out_of_space_leave_nothing(request_words_gpt2, adjusted_hparams, corpus, tmp_path, capsys,
                                                           monkeypatch):
    from adapterkit.editing import stats

    monkeypatch.setattr(stats.np, "savez", no_space)
    refused(capsys, ["stats", request_words_gpt2, "--hparams", adjusted_hparams, "--corpus", corpus], tmp_path / "stats",
            "no space left on the device", "nothing was written")
    assert no_files(tmp_path / "stats")


def test_an_edited_checkpoint_onto_a_full_disk_is_refused_before_the_edit(request_words_gpt2, rome_hparams, tmp_path, capsys,
                                                                         monkeypatch):
    disk_with_free(monkeypatch, 100_000)
    out = tmp_path / "edited"
    refused(capsys, edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), out), out, "edited checkpoint",
            "needs about", out=out)  # nothing on stdout: the edit never ran


def test_outputs_that_run_out_of_space_while_written_end_in_a_message_and_leave_nothing(request_words_gpt2, rome_hparams,
                                                                                         tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel

    from adapterkit.editing import result

    def fills_the_disk(self, directory, *args, **kwargs):
        (Path(directory) / "model.safetensors").write_bytes(b"\0" * 4096)
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")  # SafetensorError
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", fills_the_disk)
    out = tmp_path / "edited"
    code = main(edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), out))
    err = capsys.readouterr().err
    assert code == 2 and f"{out}: no space left on the device" in err and "more than 4.0 KiB needed" in err
    assert "fix:" in err and "Traceback" not in err
    assert not out.exists() and not partials(tmp_path)
    monkeypatch.setattr(result, "save_file", no_space)
    deltas = tmp_path / "delta.safetensors"
    code = main(edit_args(request_words_gpt2, rome_hparams, write_requests(tmp_path), deltas, "--deltas-only"))
    err = capsys.readouterr().err
    assert code == 2 and f"{deltas}: no space left on the device" in err
    assert not deltas.exists() and not partials(tmp_path)
