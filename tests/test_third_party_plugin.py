"""A third-party plugin distribution, pip-installed, is found through entry points with no change to the core."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "examples/adapterkit-starcoder2")], check=True)
    return target


def run_with_plugin(site, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "adapterkit.cli", *map(str, args)], capture_output=True, text=True, env=env)


def test_installed_plugin_is_listed_with_its_distribution(site):
    proc = run_with_plugin(site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["starcoder2"]["distribution"] == "adapterkit-starcoder2"
    assert plugins["starcoder2"]["architectures"] == ["starcoder2"]


def test_detect_works_on_the_new_architecture(site, tmp_path):
    ckpt = tmp_path / "starcoder2"
    script = (
        "import sys, yaml; from adapterkit.registry import get_registry; from adapterkit.checkpoint import build_model;"
        "spec = get_registry().architecture('starcoder2'); build_model(spec.tiny_config, spec).save_pretrained(sys.argv[1])"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", script, str(ckpt)], check=True, env=env)
    proc = run_with_plugin(site, "detect", ckpt, "--method", "MEMIT")
    assert proc.returncode == 0, proc.stderr
    assert "rewrite_module_tmp: model.layers.{}.mlp.c_proj" in proc.stdout
    assert "architecture: starcoder2" in proc.stdout
