"""EasyEdit's own hyperparameter files and dataclasses (committed copies, tests/data/easyedit_hparams/README.md):
adapterkit reads every file as EasyEdit does, refuses the multimodal ones as not supported, warns about keys
nobody reads, checks a file's templates against a checkpoint, and writes files EasyEdit's dataclasses load."""
import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterkit.arch.detect import detect
from adapterkit.cli import main
from adapterkit.errors import AdapterkitError, SchemaError, UnknownKeyWarning, UnsupportedMethodError
from adapterkit.settings.hparams import load_hparams, load_settings
from adapterkit.settings.methods import _float_fields
from adapterkit.arch.validate import validate_file

from checkpoints import write_tiny_checkpoint
from conftest import BUILTIN_METHODS

DATA = Path(__file__).parent / "data" / "easyedit_hparams"
FILES = sorted(DATA.glob("*/*.yaml"))
MULTIMODAL = {"MEND/blip2.yaml", "MEND/minigpt4.yaml", "SERAC/blip2.yaml", "SERAC/minigpt4.yaml"}
FIELDS = json.loads((Path(__file__).parents[1] / "schemas" / "easyedit_fields.json").read_text())
DATACLASS_MODULES = {"ROME": "rome.rome_hparams", "MEMIT": "memit.memit_hparams", "AlphaEdit": "alphaedit.AlphaEdit_hparams",
                     "PMET": "pmet.pmet_hparams", "MEND": "mend.mend_hparams", "SERAC": "serac.serac_hparams"}


def relative(path: Path) -> str:
    return path.relative_to(DATA).as_posix()


@pytest.fixture(scope="module")
def easyedit(tmp_path_factory):
    """EasyEdit's committed dataclass modules, importable as the ``easyeditor`` package (its other modules absent)."""
    root = tmp_path_factory.mktemp("easyedit")
    shutil.copytree(DATA / "easyeditor", root / "easyeditor")
    for folder in [root / "easyeditor", *(p for p in (root / "easyeditor").rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    sys.path.insert(0, str(root))
    try:
        yield lambda name: importlib.import_module(f"easyeditor.{name}")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "easyeditor" or m.startswith("easyeditor.")]:
            del sys.modules[name]


def easyedit_reading(easyedit, path: Path) -> dict:
    """The values EasyEdit's loader gives the dataclass: safe_load, then its scientific-notation conversion."""
    return easyedit("util.hparams").HyperParams.construct_float_from_scientific_notation(yaml.safe_load(path.read_text()))


# --- reading EasyEdit's files ---------------------------------------------------------------------
@pytest.mark.parametrize("path", FILES, ids=relative)
def test_every_easyedit_file_loads_into_typed_settings_or_is_refused_as_unsupported(path, easyedit):
    if relative(path) in MULTIMODAL:
        with pytest.raises(UnsupportedMethodError) as refused:
            load_settings(path)
        assert not isinstance(refused.value, SchemaError)
        assert str(path) in refused.value.message and "not support" in refused.value.message
        assert yaml.safe_load(path.read_text())["alg_name"].upper() in refused.value.message
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no key of EasyEdit's own files is unknown
        settings = load_settings(path)
    assert settings.alg_name.upper() == path.parent.name.upper()
    given = easyedit_reading(easyedit, path)
    floats = _float_fields(type(settings))
    checked = 0
    for key, value in given.items():
        name = settings.aliases.get(key, key)
        if name not in settings.setting_names():
            assert settings.extra[key] == value  # EasyEdit keys adapterkit does not read are kept
            continue
        ours = getattr(settings, name)
        assert ours == value, key
        if name in floats:
            assert type(ours) is float, key
        checked += 1
    assert checked >= 8


def test_number_text_becomes_the_float_easyedit_reads():
    rome = load_settings(DATA / "ROME" / "gpt2-xl.yaml")  # v_lr: 5e-1, which PyYAML reads as a string
    assert rome.v_lr == 0.5 and type(rome.v_lr) is float
    assert yaml.safe_load((DATA / "ROME" / "gpt2-xl.yaml").read_text())["v_lr"] == "5e-1"
    assert rome.clamp_norm_factor == 4.0 and type(rome.clamp_norm_factor) is float  # clamp_norm_factor: 4
    llama = load_settings(DATA / "ROME" / "llama-7b.yaml")
    assert llama.v_weight_decay == 0.001 and llama.v_num_grad_steps == 25
    mend = load_settings(DATA / "MEND" / "gpt2-xl.yaml")
    assert (mend.lr, mend.edit_lr, mend.lr_lr, mend.grad_clip) == (1e-6, 1e-4, 1e-4, 100.0)
    assert mend.val_every == 1000 and mend.extra["lr_scale"] == 1.0
    serac = load_settings(DATA / "SERAC" / "gpt2-xl.yaml")
    assert serac.lr == 1e-5 and type(serac.lr) is float
    memit = load_settings(DATA / "MEMIT" / "gpt2-xl.yaml")
    assert memit.mom2_update_weight == 20000.0 and memit.layers == [13, 14, 15, 16, 17]


def test_every_supported_easyedit_file_loads():
    loaded, refused = [], []
    for path in FILES:
        try:
            load_settings(path)
            loaded.append(relative(path))
        except UnsupportedMethodError:
            refused.append(relative(path))
    assert len(FILES) == 59
    assert set(refused) == MULTIMODAL
    assert len(loaded) == 55


def test_only_number_fields_read_number_text(tmp_path):
    base = yaml.safe_load((DATA / "ROME" / "gpt2-xl.yaml").read_text())
    path = tmp_path / "rome.yaml"
    path.write_text(yaml.safe_dump({**base, "model_name": "1e3", "kl_factor": "6.25E-2"}))
    hp = load_hparams(path)
    assert hp["model_name"] == "1e3" and hp["kl_factor"] == 0.0625 and hp["v_lr"] == 0.5
    for key, value in [("v_num_grad_steps", "2e1"), ("v_lr", "fast"), ("v_lr", "1e-3x")]:  # an integer, then not numbers
        path.write_text(yaml.safe_dump({**base, key: value}))
        with pytest.raises(SchemaError, match=f"#/{key}: '{value}' is not of type"):
            load_hparams(path)


def test_an_unsupported_method_is_named_with_its_file(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump({"alg_name": "FT", "layers": [1]}))
    with pytest.raises(UnsupportedMethodError, match=f"{path}: alg_name 'FT'.*does not support") as refused:
        load_settings(path)
    assert all(method in refused.value.fix for method in BUILTIN_METHODS)


# --- unknown keys ---------------------------------------------------------------------------------
def write_with(tmp_path, source: str, **extra) -> Path:
    path = tmp_path / Path(source).name
    path.write_text((DATA / source).read_text() + "\n" + yaml.safe_dump(extra))
    return path


def test_unknown_keys_warn_with_the_file_the_pointer_and_the_near_miss(tmp_path):
    path = write_with(tmp_path, "ROME/gpt2-xl.yaml", v_lrr=0.1, kl_factr=1, colour="blue")
    with pytest.warns(UnknownKeyWarning) as caught:
        hp = load_hparams(path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3
    assert messages[0].startswith(f"{path}#/colour: unknown key 'colour'") and "did you mean" not in messages[0]
    assert messages[1].startswith(f"{path}#/kl_factr:") and "did you mean 'kl_factor'?" in messages[1]
    assert messages[2].startswith(f"{path}#/v_lrr:") and "did you mean 'v_lr'?" in messages[2]
    assert hp["v_lrr"] == 0.1  # kept, as any extra key
    with pytest.raises(SchemaError, match=r"#/kl_factr: .*did you mean 'kl_factor'\?"):
        load_hparams(path, strict=True)


def test_keys_of_easyedit_s_dataclass_and_of_adapterkit_do_not_warn(tmp_path):
    path = write_with(tmp_path, "MEMIT/gpt2-xl.yaml", max_length=40, batch_size=1, v_batch_size=8, mom2_corpus="c.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_hparams(path, strict=True)
    mend_s_in_memit = write_with(tmp_path, "MEMIT/gpt2-xl.yaml", lr_scale=1.0)  # a field of EasyEdit's MEND only
    with pytest.warns(UnknownKeyWarning, match="#/lr_scale: unknown key 'lr_scale': MEMIT does not read it, nor"):
        load_hparams(mend_s_in_memit)


def test_validate_warns_and_strict_validate_and_edit_refuse(tmp_path, capsys):
    path = write_with(tmp_path, "MEND/gpt2-xl.yaml", edit_lrr=0.1)
    assert main(["validate", path]) == 0
    captured = capsys.readouterr()
    assert f"adapterkit: warning: {path}#/edit_lrr: unknown key 'edit_lrr'" in captured.err
    assert "did you mean 'edit_lr'?" in captured.err and "valid" in captured.out
    assert main(["validate", path, "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"{path}#/edit_lrr" in err and "did you mean 'edit_lr'?" in err and "fix: rename edit_lrr to edit_lr" in err
    # edit reads the hyperparameters first: refused before any model or request file is opened
    assert main(["edit", tmp_path / "no-model", "--hparams", path, "--requests", tmp_path / "none.json", "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"{path}#/edit_lrr" in err and "fix:" in err and "Traceback" not in err
    assert main(["validate", DATA / "SERAC" / "blip2.yaml"]) == 2
    err = capsys.readouterr().err
    assert "'SERAC_MULTI'" in err and "does not support" in err and "fix:" in err


# --- templates against a checkpoint ----------------------------------------------------------------
def gpt2_xl_rome_fitted(tmp_path, **changes) -> Path:
    """EasyEdit's GPT-2 XL ROME file with the layers of the 4-layer tiny GPT-2 (its templates are GPT-2's)."""
    hp = {**easyedit_file("ROME/gpt2-xl.yaml"), "layers": [1], "v_loss_layer": 3, **changes}
    path = tmp_path / "rome.yaml"
    path.write_text(yaml.safe_dump(hp))
    return path


def easyedit_file(name: str) -> dict:
    return yaml.safe_load((DATA / name).read_text())


def test_easyedit_s_file_for_another_depth_is_refused_with_pointers(tiny_gpt2_checkpoint, capsys):
    assert main(["validate", DATA / "ROME" / "gpt2-xl.yaml", "--model", tiny_gpt2_checkpoint]) == 2
    err = capsys.readouterr().err
    assert "gpt2-xl.yaml#/layers/0: layer 17 does not exist" in err
    assert "gpt2-xl.yaml#/v_loss_layer: layer 47 does not exist" in err and "use the last layer, 3" in err


def test_easyedit_s_templates_pass_on_the_architecture_they_name(tiny_gpt2_checkpoint, tmp_path, capsys):
    path = gpt2_xl_rome_fitted(tmp_path)
    assert main(["validate", path, "--model", tiny_gpt2_checkpoint]) == 0, capsys.readouterr().err
    assert easyedit_file("ROME/gpt2-xl.yaml")["lm_head_module"] == "transformer.wte"  # the tied head's other name


@pytest.mark.parametrize("key, broken, detected", [
    ("rewrite_module_tmp", "transformer.h.{}.mlp.c_proj_", "transformer.h.{}.mlp.c_proj"),
    ("rewrite_module_tmp", "transformer.h.{}.mlp", "transformer.h.{}.mlp.c_proj"),  # a module, but without a weight
    ("layer_module_tmp", "transformer.layers.{}", "transformer.h.{}"),
    ("mlp_module_tmp", "transformer.h.{}.ffn", "transformer.h.{}.mlp"),
    ("attn_module_tmp", "transformer.h.{}.self_attn", "transformer.h.{}.attn"),
    ("ln_f_module", "model.norm", "transformer.ln_f"),
    ("lm_head_module", "lm_head_", "lm_head"),
])
def test_each_template_is_checked_against_the_checkpoint(tiny_gpt2_checkpoint, tmp_path, capsys, key, broken, detected):
    path = gpt2_xl_rome_fitted(tmp_path, **{key: broken})
    assert main(["validate", path, "--model", tiny_gpt2_checkpoint]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 1 problem(s)" in err
    assert f"{path}#/{key}: '{broken.format(1)}'" in err
    assert f"fix: use '{detected}', the gpt2 declaration's template" in err


def test_a_tied_head_stored_once_passes_as_lm_head(tmp_path, capsys):
    path = write_tiny_checkpoint("llama", tmp_path / "llama", tie_word_embeddings=True)
    hp = {**easyedit_file("ROME/llama-7b.yaml"), "layers": [0], "v_loss_layer": 1}
    file = tmp_path / "rome.yaml"
    file.write_text(yaml.safe_dump(hp))
    assert main(["validate", file, "--model", path]) == 0, capsys.readouterr().err


VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
                      | st.sampled_from(["1e-3", "{}", "{0}", "x.{}.y", "{x}"]),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from([p for p in FILES if relative(p) not in MULTIMODAL]),
       key=st.sampled_from(sorted({k for p in FILES for k in yaml.safe_load(p.read_text())}) + ["rewrite_module_tmps", "x_tmp"]),
       value=VALUES)
def test_fuzz_any_value_at_any_key_gives_only_adapterkit_errors(tiny_gpt2_checkpoint, tmp_path, source, key, value):
    path = tmp_path / "hp.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(source.read_text()), key: value}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownKeyWarning)
        for call in (lambda: load_settings(path), lambda: validate_file(path, model_path=tiny_gpt2_checkpoint, strict=True)):
            try:
                call()
            except AdapterkitError:
                pass


# --- writing EasyEdit's form ------------------------------------------------------------------------
@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_detect_format_easyedit_writes_exactly_the_dataclass_fields(tiny_gpt2_checkpoint, easyedit, tmp_path, capsys, method):
    out = tmp_path / f"{method}.yaml"
    assert main(["detect", tiny_gpt2_checkpoint, "--method", method, "--format", "easyedit", "-o", out]) == 0
    capsys.readouterr()
    written = yaml.safe_load(out.read_text())
    fields = FIELDS["methods"][method]["fields"]
    assert set(written) == set(fields)
    assert {name for name, entry in fields.items() if "default" not in entry} <= set(written)
    cls = getattr(easyedit(f"models.{DATACLASS_MODULES[method]}"), FIELDS["methods"][method]["class"])
    loaded = cls.from_hparams(str(out))  # EasyEdit's own loader: cls(**config) takes no unknown key, misses none
    assert loaded.alg_name == method and loaded.model_name == str(tiny_gpt2_checkpoint)
    ours = load_settings(dict(detect(tiny_gpt2_checkpoint, method=method)))
    for name in set(fields) & set(ours.setting_names()):
        if getattr(ours, name) is not None:  # None: adapterkit's "not set" (device: where the model is)
            assert getattr(loaded, name) == getattr(ours, name), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_settings(out, strict=True)  # and adapterkit reads it back


def test_detect_keeps_adapterkit_s_format_by_default(tiny_gpt2_checkpoint, capsys):
    assert main(["detect", tiny_gpt2_checkpoint, "--method", "MEMIT"]) == 0
    written = yaml.safe_load(capsys.readouterr().out)
    assert written["architecture"] == "gpt2" and "architecture" not in FIELDS["methods"]["MEMIT"]["fields"]
    assert written["context_template_length_params"] == [[10, 5]]


def test_the_field_lists_are_what_the_extraction_script_writes():
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        extract = importlib.import_module("extract_easyedit_fields")
    finally:
        sys.path.pop(0)
    assert extract.extract(DATA, extract.committed_commit()) == FIELDS
    assert FIELDS["source"]["commit"] in (DATA / "README.md").read_text()
