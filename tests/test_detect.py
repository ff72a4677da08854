"""detect on tiny checkpoints of every architecture, on index-only checkpoints, and on bad input."""
import json
from pathlib import Path

import pytest
import yaml

import adapterkit
from adapterkit.checkpoint import build_model, load_model
from adapterkit.autodetect import detect
from adapterkit.errors import CheckpointError, UnknownArchitectureError
from adapterkit.hparams import load_hparams
from adapterkit.registry import get_registry

from checkpoints import write_index_only_checkpoint, write_tiny_checkpoint

ARCHS = get_registry().architecture_names()
METHODS = ["ROME", "MEMIT", "PMET", "MEND", "SERAC"]
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
    assert tuple(weight.shape) == ((inter, hidden) if spec.weight_layout == "conv1d" else (hidden, inter))


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
