"""`adapterkit new-plugin`: a distribution drafted from a checkpoint no plugin declares validates, installs with pip,
registers through the entry points, and its own tests pass."""
import json

import pytest
import yaml

from adapterkit.cli import main
from adapterkit.files.atomic import current_umask
from adapterkit.arch.registry import get_registry
from adapterkit.arch.tinyconfig import tiny_config, write_checkpoint
from plugin_sites import install_into, python_with


@pytest.fixture(scope="module")
def drafted(tmp_path_factory):
    root = tmp_path_factory.mktemp("new-plugin")
    checkpoint = write_checkpoint(tiny_config("starcoder2"), root / "starcoder2-ckpt")
    assert main(["new-plugin", checkpoint, "--name", "adapterkit-sc2", "-o", root / "dist"]) == 0
    return root


def test_the_draft_is_a_distribution_whose_declaration_validates(drafted):
    dist = drafted / "dist"
    assert {p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "adapterkit_sc2/__init__.py", "adapterkit_sc2/starcoder2.yaml", "tests/test_starcoder2.py"}
    text = (dist / "adapterkit_sc2/starcoder2.yaml").read_text()
    assert "#   mlp_out" in text and "(traced)" in text  # each role's finding, for the reviewer
    declaration = yaml.safe_load(text)
    assert declaration["modules"]["layer"]["mlp_out"] == "mlp.c_proj" and declaration["tiny_config"]["num_hidden_layers"] == 4
    assert main(["validate", dist / "adapterkit_sc2/starcoder2.yaml"]) == 0
    assert dist.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # the umask's mode, not mkdtemp's private 0700


def test_it_installs_registers_and_passes_its_own_tests(drafted):
    site = drafted / "site"
    install_into(site, drafted / "dist")
    listed = python_with(site, "-m", "adapterkit", "plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["starcoder2"]["distribution"] == "adapterkit-sc2"
    tests = python_with(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", drafted / "dist" / "tests", cwd=drafted)
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-2000:]
    assert "8 passed" in tests.stdout  # conformance on itself among them


def test_a_declared_model_type_or_a_used_directory_is_refused(drafted, tmp_path, capsys):
    spec = get_registry().architecture("gpt2")
    from adapterkit.checkpoints.build import build_model

    build_model(spec.tiny_config, spec).save_pretrained(tmp_path / "gpt2")
    assert main(["new-plugin", tmp_path / "gpt2", "--name", "adapterkit-gpt2", "-o", tmp_path / "out"]) == 2
    assert "already declared by 'gpt2'" in capsys.readouterr().err
    assert main(["new-plugin", drafted / "starcoder2-ckpt", "--name", "adapterkit-sc2", "-o", drafted / "dist"]) == 2
    assert "not empty" in capsys.readouterr().err
