"""A third-party method distribution (examples/adapterkit-scale), pip-installed, fulfils the method contract:
found through entry points, its own settings class and schema (shipped in its package), another method's
layer rules, and adapterkit.edit, restore and deltas files working for it as for the built-in methods."""
import json

import pytest

from plugin_sites import REPO, install_into, python_with


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install_into(tmp_path_factory.mktemp("site"), REPO / "examples/adapterkit-scale")


def test_installed_method_is_listed_with_its_distribution(site):
    proc = python_with(site, "-m", "adapterkit", "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["scale"]["distribution"] == "adapterkit-scale" and plugins["scale"]["methods"] == ["SCALE"]
    assert listing["faults"] == []


EDIT_SCRIPT = """
import json, sys
from pathlib import Path
import torch
import adapterkit
from adapterkit.checkpoints.build import build_model
from adapterkit.errors import SchemaError
from adapterkit.arch.registry import get_registry
from adapterkit.arch.schema import schema_properties

out = {}
registry = get_registry()
method = registry.method("scale")
properties, required = schema_properties(method.schema)
out["schema keys"] = sorted(properties)
out["settings"] = sorted(method.settings_class.setting_names())
out["required"] = [sorted(required), sorted(method.settings_class.required())]

spec = registry.architecture("gpt2")
torch.manual_seed(0)
model = build_model(spec.tiny_config, spec).eval()
model.save_pretrained(sys.argv[1])
hp = adapterkit.detect(sys.argv[1], method="scale")
out["detected"] = {k: v for k, v in hp.items() if k != "model_name"}
out["rome layers"] = adapterkit.detect(sys.argv[1], method="rome")["layers"]

name = f"{hp['rewrite_module_tmp'].format(hp['layers'][0])}.weight"
before = model.get_parameter(name).detach().clone()
record = {"prompt": "The capital of France is", "subject": "France", "target_new": "Rome"}
result = adapterkit.edit(model, None, record, {**hp, "factor": 3, "an_easyedit_key": 1}, evaluate=False)
out["scaled"] = torch.equal(model.get_parameter(name).detach(), before * 3)
result.save(Path(sys.argv[1]) / "deltas.safetensors")
result.restore()
out["restored"] = torch.equal(model.get_parameter(name).detach(), before)
replayed = adapterkit.apply_deltas(model, Path(sys.argv[1]) / "deltas.safetensors")
out["replayed"] = torch.equal(model.get_parameter(name).detach(), before * 3)
out["recorded"] = replayed.hparams
try:
    adapterkit.edit(model, None, record, {**hp, "factor": "big"}, evaluate=False)
except SchemaError as exc:
    out["error"] = exc.message
print(json.dumps(out))
"""


def test_detect_edit_restore_and_replay_through_the_contract(site, tmp_path):
    proc = python_with(site, "-c", EDIT_SCRIPT, tmp_path / "gpt2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["schema keys"] == out["settings"]  # the plugin's settings and its schema agree
    assert out["required"][0] == out["required"][1]
    detected = out["detected"]
    assert detected == {"alg_name": "SCALE", "architecture": "gpt2", "factor": 1.0, "layers": out["rome layers"],
                        "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj"}  # ROME's layer rule, taken
    assert out["scaled"] and out["restored"] and out["replayed"]
    assert out["recorded"]["factor"] == 3.0 and out["recorded"]["an_easyedit_key"] == 1  # what ran, extras kept
    assert "#/factor" in out["error"] and "a positive number" in out["error"]  # the plugin's own schema, by pointer
