"""EasyEdit's training files (hparams/TRAINING/, keyed ``alg``; committed copies, tests/data/easyedit_hparams/README.md):
adapterkit validates them as the method's settings, `train` takes them as they ship, and `detect --format
easyedit-training` writes files EasyEdit's own MENDTrainingHparams / SERACTrainingHparams load."""
import json
import math
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adapterkit.arch.validate import validate_file
from adapterkit.cli import main
from adapterkit.demo.factmodels import build_tokenizer
from adapterkit.editing import training
from adapterkit.errors import AdapterkitError, UnknownKeyWarning, UnsupportedMethodError
from adapterkit.requests import load_requests
from adapterkit.settings.hparams import load_settings

from checkpoints import write_tiny_checkpoint
from test_easyedit_hparams import VALUES, easyedit, easyedit_reading  # noqa: F401 (a fixture)

DATA = Path(__file__).parent / "data" / "easyedit_hparams"
TRAINING = sorted((DATA / "TRAINING").glob("*/*.yaml"))
MULTIMODAL = {"MEND/blip2.yaml", "MEND/blip2-vision.yaml", "MEND/minigpt4.yaml", "MEND/llavaov-7b.yaml",
              "MEND/qwen2vl-7b.yaml", "MEND/qwen3vl-4b.yaml", "SERAC/blip2.yaml", "SERAC/minigpt4.yaml"}
FIELDS = json.loads((Path(__file__).parents[1] / "schemas" / "easyedit_fields.json").read_text())
TRAINING_MODULES = {"MEND": "trainer.training_hparams.mend_training_hparams",
                    "SERAC": "trainer.training_hparams.serac_training_hparams"}
COUNTERFACT = Path(__file__).parent / "data" / "records" / "counterfact.json"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where torch sees no GPU")


def relative(path: Path) -> str:
    return path.relative_to(DATA / "TRAINING").as_posix()


def in_adapterkit_s_terms(given: dict) -> dict:
    """EasyEdit's values of a training file under adapterkit's names and units: alg_name, and optimiser steps
    (accumulate_bs iterations each) for the trainer's iteration counts; a small_name not here is null."""
    accumulate = given.get("accumulate_bs", 1)
    out = {}
    for key, value in given.items():
        if key in ("max_iters", "val_interval", "early_stop_patience"):
            value = math.ceil(value / accumulate)
        if key == "small_name" and value and not Path(value).exists():
            value = None
        out["alg_name" if key == "alg" else key] = value
    return out


def test_the_copies_are_easyedit_s_26_mend_and_serac_training_files():
    assert len(TRAINING) == 26
    assert sum(p.parent.name == "MEND" for p in TRAINING) == 19
    assert {relative(p) for p in TRAINING} >= MULTIMODAL
    assert all("alg" in yaml.safe_load(p.read_text()) and "alg_name" not in yaml.safe_load(p.read_text()) for p in TRAINING)


# --- reading the training files -------------------------------------------------------------------
@pytest.mark.parametrize("path", TRAINING, ids=relative)
def test_every_training_file_validates_and_loads_into_settings_or_is_refused_as_multimodal(path, easyedit):
    if relative(path) in MULTIMODAL:
        with pytest.raises(UnsupportedMethodError) as refused:
            load_settings(path)
        assert str(path) in refused.value.message and "multimodal" in refused.value.message
        assert "TrainingHparams" in refused.value.message  # named by the trainer's dataclass, not the editor's
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert validate_file(path, strict=True) == ""  # no architecture-declaration errors, no unknown key
        settings = load_settings(path, strict=True)
    assert not [w for w in caught if issubclass(w.category, UnknownKeyWarning)]
    assert all("#/small_name" in str(w.message) for w in caught)  # the only warning: SERAC's model path not here
    assert settings.alg_name == path.parent.name
    given = in_adapterkit_s_terms(easyedit_reading(easyedit, path))
    checked = 0
    for key, value in given.items():
        name = settings.aliases.get(key, key)
        if name not in settings.setting_names():
            assert settings.extra[key] == value, key  # EasyEdit keys adapterkit does not read are kept
            continue
        assert getattr(settings, name) == value, key
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("path", [p for p in TRAINING if relative(p) not in MULTIMODAL], ids=relative)
def test_easyedit_s_own_training_dataclass_loads_each_copy(path, easyedit):
    """The committed dataclasses are the ones these files are for (the field lists adapterkit uses come from them)."""
    method = path.parent.name
    cls = getattr(easyedit(TRAINING_MODULES[method]), FIELDS["training"][method]["class"])
    assert cls.from_hparams(str(path)).alg == method


def test_the_trainer_s_iteration_counts_become_optimiser_steps():
    mend = load_settings(DATA / "TRAINING" / "MEND" / "gpt2-xl.yaml")  # max_iters 100000, val_interval 1000,
    assert (mend.max_iters, mend.val_every, mend.early_stop_patience, mend.accumulate_bs) == (10000, 100, 2000, 10)
    instruct = load_settings(DATA / "TRAINING" / "MEND" / "gpt2-xl-instruct.yaml")  # 30000, 10, 20000; accumulate_bs 2
    assert (instruct.max_iters, instruct.val_every, instruct.early_stop_patience) == (15000, 5, 10000)
    assert mend.lr == 1e-6 and type(mend.lr) is float and mend.grad_clip == 100.0 and mend.inner_params[0] == (
        "transformer.h.45.mlp.c_proj.weight")
    assert mend.model_name == "./hugging_cache/gpt2-xl" and mend.extra["model_save_pt"] == 5000


def test_validate_a_training_file_from_the_command_line(tmp_path, capsys):
    path = DATA / "TRAINING" / "MEND" / "gpt2-xl.yaml"
    assert main(["validate", path, "--strict"]) == 0
    captured = capsys.readouterr()
    assert f"{path}: valid" in captured.out and captured.err == ""
    typo = tmp_path / "mend.yaml"
    typo.write_text(path.read_text() + "\nmodel_save_ptt: 5\n")
    assert main(["validate", typo]) == 0
    err = capsys.readouterr().err
    assert f"{typo}#/model_save_ptt: unknown key" in err and "did you mean 'model_save_pt'?" in err
    assert "required property" not in err


def test_alg_without_a_trainer_field_is_named_as_the_problem(tmp_path, capsys):
    path = tmp_path / "mend.yaml"
    path.write_text(yaml.safe_dump({"alg": "MEND", "inner_params": ["transformer.h.1.mlp.c_fc.weight"]}))
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}#/alg_name: alg_name is missing; 'alg' names the method only in EasyEdit's training files" in err
    assert "fix: rename alg to alg_name" in err and "required property" not in err


def test_a_multimodal_training_file_is_refused_naming_its_key_and_class(capsys):
    path = DATA / "TRAINING" / "SERAC" / "minigpt4.yaml"
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}: alg 'SERAC_MULTI' (EasyEdit's multimodal SERACMultimodalTrainingHparams)" in err
    assert "does not support" in err and "fix:" in err and "small_name" not in err


# --- train takes them as they ship ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    requests = load_requests(COUNTERFACT)
    return build_tokenizer([t for r in requests for t in (r.prompt, r.target_new, r.ground_truth or "",
                                                          *r.rephrase_prompts, *r.locality_prompts,
                                                          *r.locality_ground_truths)])


def tiny_gpt2(directory: Path, tok, **config) -> Path:
    path = write_tiny_checkpoint("gpt2", directory, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id, **config)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2_xl_deep(tmp_path_factory, tokenizer):
    """A tiny GPT-2 as deep as GPT-2 XL (48 layers), so EasyEdit's MEND file's inner_params (layers 45-47) exist."""
    return tiny_gpt2(tmp_path_factory.mktemp("training") / "gpt2-48", tokenizer, n_layer=48)


@pytest.fixture
def short_runs(monkeypatch):
    """The trainer runs one optimiser step of one batch (the files ask for thousands) and keeps the settings
    it was handed, to compare with the file's."""
    handed = []
    real = training.train

    def one_step(task, train_set, val_set, settings, out_dir, **options):
        handed.append(settings)
        short = settings.replace(max_iters=1, accumulate_bs=1, val_every=1,
                                 **({"norm_warmup": 1} if hasattr(settings, "norm_warmup") else {}))
        return real(task, train_set, val_set, short, out_dir, **options)

    monkeypatch.setattr(training, "train", one_step)
    return handed


@NO_CUDA
def test_train_reads_the_shipped_file_and_asks_for_cpu_where_it_says_cuda(gpt2_xl_deep, tmp_path, capsys):
    path = DATA / "TRAINING" / "MEND" / "gpt2-xl.yaml"  # device: cuda:0
    assert main(["train", gpt2_xl_deep, "--hparams", path, "--train", COUNTERFACT, "--out", tmp_path / "mend"]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda:0': no CUDA device" in err and "--device cpu" in err and "Traceback" not in err
    assert "alg_name" not in err and "required property" not in err and not (tmp_path / "mend").exists()


def test_train_takes_easyedit_s_mend_training_file_as_it_ships(gpt2_xl_deep, short_runs, tmp_path, capsys):
    path = DATA / "TRAINING" / "MEND" / "gpt2-xl.yaml"  # its model paths, ./hugging_cache/gpt2-xl, are not here
    out = tmp_path / "mend"
    assert main(["train", gpt2_xl_deep, "--hparams", path, "--train", COUNTERFACT, "--out", out, "--device", "cpu"]) == 0
    assert f"wrote the MEND editor to {out}" in capsys.readouterr().err
    [handed] = short_runs
    assert handed == load_settings(path)
    assert handed.inner_params == yaml.safe_load(path.read_text())["inner_params"] and handed.max_iters == 10000
    assert (out / "editor.safetensors").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the run's hparams.yaml (adapterkit's form, EasyEdit's keys kept) reads back
        ran = load_settings(out / "hparams.yaml", strict=True)
    assert ran.alg_name == "MEND" and ran.inner_params == handed.inner_params and ran.extra["model_save_pt"] == 5000


def test_train_takes_easyedit_s_serac_training_file_as_it_ships(tokenizer, short_runs, tmp_path, capsys):
    checkpoint = tiny_gpt2(tmp_path / "gpt2", tokenizer)
    path = DATA / "TRAINING" / "SERAC" / "gpt2-xl.yaml"  # small_name: ./hugging_cache/gpt2, not here
    out = tmp_path / "serac"
    assert main(["train", checkpoint, "--hparams", path, "--train", COUNTERFACT, "--out", out, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"adapterkit: warning: {path}#/small_name: './hugging_cache/gpt2' does not exist here" in err
    assert "a copy of the model being trained" in err and f"wrote the SERAC editor to {out}" in err
    [handed] = short_runs
    assert handed.small_name is None and handed.batch_size == 10 and handed.lr == 1e-5
    assert (out / "editor.safetensors").is_file()


# --- writing EasyEdit's training form -------------------------------------------------------------
ARCHITECTURES = ["gpt2", "gpt_neox", "llama", "qwen2"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-detect")
    return {arch: write_tiny_checkpoint(arch, root / arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("method", ["MEND", "SERAC"])
def test_detect_writes_a_training_file_easyedit_s_trainer_loads(checkpoints, easyedit, tmp_path, capsys, method, arch):
    checkpoint = checkpoints[arch]
    out = tmp_path / f"{method}.yaml"
    assert main(["detect", checkpoint, "--method", method, "--format", "easyedit-training", "-o", out]) == 0
    assert "Traceback" not in capsys.readouterr().err
    written = yaml.safe_load(out.read_text())
    fields = FIELDS["training"][method]["fields"]
    assert set(written) == set(fields) and written["alg"] == method and "alg_name" not in written
    cls = getattr(easyedit(TRAINING_MODULES[method]), FIELDS["training"][method]["class"])
    loaded = cls.from_hparams(str(out))  # EasyEdit's own loader: cls(**config) takes no unknown key, misses none
    assert loaded.alg == method and loaded.model_name == str(checkpoint) and loaded.device == "cuda:0"
    ours = load_settings(detected(checkpoint, method))
    for field in fields:
        name = ours.aliases.get(field, field)
        if name in ours.setting_names() and getattr(ours, name) is not None:
            expected = getattr(ours, name)
            if field in ("max_iters", "val_interval", "early_stop_patience"):  # EasyEdit's iterations
                expected *= ours.accumulate_bs
            assert getattr(loaded, field) == expected, field
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_settings(out, strict=True)  # and adapterkit reads it back, as the same settings
    for name in ("inner_params", "lr", "max_iters", "val_every", "early_stop_patience", "accumulate_bs", "seed"):
        if name in ours.setting_names():
            assert getattr(back, name) == getattr(ours, name), name
    assert main(["validate", out, "--model", checkpoint]) == 0, capsys.readouterr().err


def detected(checkpoint, method) -> dict:
    from adapterkit.arch.detect import detect

    return dict(detect(checkpoint, method=method))


def test_iteration_counts_are_written_as_easyedit_s_iterations(checkpoints, easyedit, tmp_path, capsys):
    """Settings that accumulate batches are written in EasyEdit's units and read back unchanged."""
    from adapterkit.settings.easyedit import to_easyedit

    settings = load_settings(DATA / "TRAINING" / "MEND" / "gpt2-xl.yaml").replace(
        inner_params=["transformer.h.3.mlp.c_fc.weight"])
    written, _, _ = to_easyedit(settings, str(checkpoints["gpt2"]), training=True)
    assert (written["max_iters"], written["val_interval"], written["early_stop_patience"]) == (100000, 1000, 20000)
    out = tmp_path / "mend.yaml"
    out.write_text(yaml.safe_dump(written))
    back = load_settings(out)
    assert (back.max_iters, back.val_every, back.early_stop_patience, back.accumulate_bs) == (10000, 100, 2000, 10)


def test_detect_refuses_a_method_easyedit_does_not_train(checkpoints, tmp_path, capsys):
    out = tmp_path / "rome.yaml"
    assert main(["detect", checkpoints["gpt2"], "--method", "ROME", "--format", "easyedit-training", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "EasyEdit trains no ROME editor: it has training files for MEND, SERAC" in err and "fix:" in err
    assert not out.exists()


# --- any value anywhere ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(source=st.sampled_from(TRAINING),
       key=st.sampled_from(sorted({k for p in TRAINING for k in yaml.safe_load(p.read_text())} | {"alg_name", "val_every"})),
       value=VALUES)
def test_fuzz_any_value_at_any_key_of_a_training_file_gives_only_adapterkit_errors(source, key, value):
    document = {**yaml.safe_load(source.read_text()), key: value}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hp.yaml"
        path.write_text(yaml.safe_dump(document))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for call in (lambda: load_settings(path), lambda: validate_file(path, strict=True)):
                try:
                    call()
                except AdapterkitError:
                    pass
