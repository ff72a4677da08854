"""A third-party plugin distribution, pip-installed, is found through entry points with no change to the core."""
import json

import pytest

from plugin_sites import REPO, install_into, python_with


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install_into(tmp_path_factory.mktemp("site"), REPO / "examples/adapterkit-starcoder2")


def run_with_plugin(site, *args):
    return python_with(site, "-m", "adapterkit", *args)


def test_installed_plugin_is_listed_with_its_distribution(site):
    proc = run_with_plugin(site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["starcoder2"]["distribution"] == "adapterkit-starcoder2"
    assert plugins["starcoder2"]["architectures"] == ["starcoder2"]


def test_detect_works_on_the_new_architecture(site, tmp_path):
    ckpt = tmp_path / "starcoder2"
    script = (
        "import sys, yaml; from adapterkit.arch.registry import get_registry; from adapterkit.checkpoints.build import build_model;"
        "spec = get_registry().architecture('starcoder2'); build_model(spec.tiny_config, spec).save_pretrained(sys.argv[1])"
    )
    python_with(site, "-c", script, ckpt, check=True)
    proc = run_with_plugin(site, "detect", ckpt, "--method", "MEMIT")
    assert proc.returncode == 0, proc.stderr
    assert "rewrite_module_tmp: model.layers.{}.mlp.c_proj" in proc.stdout
    assert "architecture: starcoder2" in proc.stdout
