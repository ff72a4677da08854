"""detect on tiny checkpoints of every architecture, on index-only checkpoints, and on bad input."""
import json
from pathlib import Path

import pytest
import yaml

import adapterkit
from adapterkit.checkpoints.loading import load_model
from adapterkit.checkpoints.build import build_model
from adapterkit.arch.detect import detect, method_hparams
from adapterkit.errors import CheckpointError, SchemaError, UnknownArchitectureError
from adapterkit.settings.hparams import load_hparams
from adapterkit.arch.registry import Registry, get_registry

from checkpoints import write_index_only_checkpoint, write_tiny_checkpoint
from conftest import BUILTIN_METHODS

ARCHS = get_registry().architecture_names()
METHODS = list(BUILTIN_METHODS)
CHATGLM3_6B = Path(__file__).parent / "data" / "chatglm3-6b"


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: write_tiny_checkpoint(arch, root / arch) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_detect_writes_valid_hparams_whose_templates_resolve(tiny_checkpoints, arch, method, tmp_path):
    path = tiny_checkpoints[arch]
    hparams = detect(path, method=method)
    out = tmp_path / "hp.yaml"
    out.write_text(yaml.safe_dump(hparams))
    assert load_hparams(out) == hparams
    model, _ = load_model(path)
    modules = dict(model.named_modules())
    parameters = dict(model.named_parameters())
    num_layers = get_registry().architecture(arch).num_layers(model.config)
    for key, value in hparams.items():
        if key.endswith("_tmp") or key.endswith("_tmps"):
            for template in value if isinstance(value, list) else [value]:
                assert all(template.format(layer) in modules for layer in range(num_layers)), (key, template)
        elif key.endswith("_module"):
            assert value in modules, (key, value)
    for name in hparams.get("inner_params", []):
        assert name in parameters
    assert all(0 <= layer < num_layers for layer in hparams.get("layers", []))
    if "v_loss_layer" in hparams:
        assert hparams["v_loss_layer"] == num_layers - 1


@pytest.mark.parametrize("arch", ARCHS)
def test_every_role_resolves_on_the_loaded_model(tiny_checkpoints, arch):
    spec = get_registry().architecture(arch)
    model, _ = load_model(tiny_checkpoints[arch])
    for role in ("embed", "ln_f", "lm_head"):
        spec.module(model, role)
    for layer in range(spec.num_layers(model.config)):
        for role in ("layer", "attn", "attn_out", "mlp", "mlp_in", "mlp_out"):
            spec.module(model, role, layer)
    weight = spec.module(model, "mlp_out", 0).weight
    hidden, inter = spec.hidden_size(model.config), spec.intermediate_size(model.config)
    assert tuple(weight.shape) == spec.stored_shape((hidden, inter))


def test_chatglm3_6b_index_without_weights():
    hparams = detect(CHATGLM3_6B, method="ROME")
    assert hparams["layers"] == [5]
    assert hparams["rewrite_module_tmp"] == "transformer.encoder.layers.{}.mlp.dense_4h_to_h"
    assert hparams["v_loss_layer"] == 27
    mend = detect(CHATGLM3_6B, method="MEND")
    assert "transformer.encoder.layers.27.mlp.dense_h_to_4h.weight" in mend["inner_params"]


def test_config_only_directory_is_checked_on_the_meta_device(tmp_path):
    spec = get_registry().architecture("llama")
    (tmp_path / "config.json").write_text(json.dumps(spec.tiny_config))
    assert detect(tmp_path, method="MEMIT")["rewrite_module_tmp"] == "model.layers.{}.mlp.down_proj"


def test_python_api_matches_the_cli_output(tiny_checkpoints, tmp_path, capsys):
    from adapterkit.cli import main

    out = tmp_path / "rome.yaml"
    assert main(["detect", str(tiny_checkpoints["gptj"]), "--method", "rome", "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == adapterkit.detect(tiny_checkpoints["gptj"], method="rome")


# --- bad input ----------------------------------------------------------------------------------
def _error(path, method="ROME"):
    with pytest.raises((CheckpointError, UnknownArchitectureError)) as err:
        detect(path, method=method)
    return err.value


def test_missing_path(tmp_path):
    err = _error(tmp_path / "nowhere")
    assert "no such directory" in err.message and "never downloads" in err.fix


def test_missing_config(tmp_path):
    err = _error(tmp_path)
    assert "config.json: missing" in err.message


def test_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2",')
    err = _error(tmp_path)
    assert "config.json: not valid JSON (line 1" in err.message


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "brand_new_lm"}))
    err = _error(tmp_path)
    assert "'brand_new_lm'" in err.message and "transformers does not know" in err.message
    assert "CONTRIBUTING.md" in err.fix


def test_template_matching_no_tensor_names_the_closest(tmp_path):
    spec = get_registry().architecture("gpt2")
    model = build_model(spec.tiny_config, spec)
    names = [n.replace("mlp.c_proj", "mlp.proj_out") for n in model.state_dict()]
    path = write_index_only_checkpoint(tmp_path / "ckpt", spec.tiny_config, names)
    err = _error(path)
    assert "'transformer.h.{}.mlp.c_proj'" in err.message
    assert "transformer.h.0.mlp.proj_out.weight" in err.message  # the closest existing name
    assert "gpt2.yaml" in err.fix


def test_weights_contradicting_the_config(tmp_path):
    path = write_tiny_checkpoint("llama", tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 999
    (path / "config.json").write_text(json.dumps(config))
    err = _error(path)
    assert "model.layers.0.mlp.down_proj.weight has shape [64, 256]" in err.message
    assert "intermediate=999" in err.message


def test_depth_contradicting_the_config(tmp_path):
    spec = get_registry().architecture("gptj")
    names = build_model(spec.tiny_config, spec).state_dict().keys()
    path = write_index_only_checkpoint(tmp_path / "ckpt", {**spec.tiny_config, "n_layer": 6}, names)
    err = _error(path)
    assert "says 6 layers" in err.message and "hold 4" in err.message


class _WithoutRomeRule:
    """GPT-2's declaration without its ROME layer rule, as a plugin."""

    @adapterkit.hookimpl
    def register_architectures(self, register):
        declaration = get_registry().architecture("gpt2").declaration
        register({**declaration, "defaults": {k: v for k, v in declaration["defaults"].items() if k != "rome"}})

    @adapterkit.hookimpl
    def register_methods(self, register):
        from adapterkit.methods import builtin_methods

        for method in builtin_methods():
            register(method)


def test_an_architecture_without_a_layer_rule_asks_for_layers(tmp_path):
    registry = Registry()
    registry.add_plugin(_WithoutRomeRule(), "without-rome-rule")
    path = write_tiny_checkpoint("gpt2", tmp_path / "ckpt")
    with pytest.raises(SchemaError, match="no layer rule for ROME.*give `layers`") as raised:
        detect(path, method="ROME", registry=registry)
    assert "--layers" in raised.value.fix and "defaults" in raised.value.fix
    assert detect(path, method="ROME", layers=[2], registry=registry)["layers"] == [2]
    assert detect(path, method="MEMIT", registry=registry)["layers"]  # the other rules still apply


def test_layers_given_to_detect_replace_the_rule(tiny_checkpoints, capsys):
    from adapterkit.cli import main

    assert main(["detect", tiny_checkpoints["llama"], "--method", "MEMIT", "--layers", "0", "2"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["layers"] == [0, 2]


# Published sizes: (architecture, config, method, setting, the published value at that size).
PUBLISHED_AT_REFERENCE = [
    ("llama", {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008}, "MEMIT", "mom2_update_weight", 15000),
    ("llama", {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008}, "ROME", "clamp_norm_factor", 4),
    ("gpt2", {"n_layer": 48, "n_embd": 1600, "n_inner": 6400}, "MEMIT", "mom2_update_weight", 20000),
    ("gptj", {"n_layer": 28, "n_embd": 4096, "n_inner": 16384}, "MEMIT", "mom2_update_weight", 15000),
]


@pytest.mark.parametrize("arch, widths, method, key, published", PUBLISHED_AT_REFERENCE)
def test_scaled_settings_give_the_published_value_at_the_reference_size(arch, widths, method, key, published):
    spec = get_registry().architecture(arch)
    config = {**spec.tiny_config, **widths}
    hparams = method_hparams(spec, config, get_registry().method(method), model_name="reference")
    assert hparams[key] == published


def test_scaled_settings_follow_a_smaller_model():
    spec = get_registry().architecture("llama")
    small = {**spec.tiny_config, "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536}
    registry = get_registry()
    memit = method_hparams(spec, small, registry.method("MEMIT"), model_name="small")
    pmet = method_hparams(spec, small, registry.method("PMET"), model_name="small")
    rome = method_hparams(spec, small, registry.method("ROME"), model_name="small")
    assert memit["mom2_update_weight"] == pmet["mom2_update_weight"] == pytest.approx(15000 * 1536 / 11008, rel=1e-3)
    assert rome["clamp_norm_factor"] == pytest.approx(4 * (576 / 4096) ** 0.5, rel=1e-3)
