"""A third-party command distribution (examples/adapterkit-inspect), pip-installed, adds `adapterkit inspect-deltas`
through the same `register_commands` hook the built-in commands use; a clash never takes a built-in command away."""
import json

import pytest
import torch
from safetensors.torch import save_file

from adapterkit.arch.registry import Registry
from adapterkit.cli import Command
from plugin_sites import REPO, install_into, python_with


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install_into(tmp_path_factory.mktemp("site"), REPO / "examples/adapterkit-inspect")


def test_the_installed_command_is_listed_and_runs(site, tmp_path):
    listing = python_with(site, "-m", "adapterkit", "--help")
    assert listing.returncode == 0, listing.stderr
    assert "inspect-deltas" in listing.stdout and "list the weights a deltas file changes" in listing.stdout
    plugins = json.loads(python_with(site, "-m", "adapterkit", "plugins", "--json").stdout)["plugins"]
    assert {p["name"]: p["commands"] for p in plugins}["inspect"] == ["inspect-deltas"]

    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.tensor([1.0, -1.0, 2.0]))
    save_file({"layers.2.mlp.down_proj.weight": rank_one}, str(tmp_path / "deltas.safetensors"))
    proc = python_with(site, "-m", "adapterkit", "inspect-deltas", tmp_path / "deltas.safetensors", "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["weight"] == "layers.2.mlp.down_proj.weight" and row["shape"] == [4, 3] and row["rank"] == 1
    assert row["norm"] == pytest.approx(float(rank_one.norm()))


def test_the_installed_command_ends_bad_input_cleanly(site, tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    proc = python_with(site, "-m", "adapterkit", "inspect-deltas", tmp_path / "broken.safetensors")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "broken.safetensors: not a safetensors deltas file" in proc.stderr and "fix:" in proc.stderr


def plugin_registering(*commands):
    """A plugin module whose register_commands hands over ``commands``."""
    import types

    from adapterkit import hookimpl

    plugin = types.ModuleType("plugin_under_test")

    @hookimpl
    def register_commands(register):
        for command in commands:
            register(command)

    plugin.register_commands = register_commands
    return plugin


def test_a_plugin_cannot_take_a_built_in_command_and_the_clash_is_a_fault():
    registry = Registry().load_entry_points()
    built_in = registry.commands["edit"]
    registry.add_plugin(plugin_registering(Command("edit", lambda args: 0)), "thief", "adapterkit-thief", "1.0")
    assert registry.commands["edit"] is built_in
    [fault] = [f for f in registry.faults if f.name == "thief"]
    assert fault.kind == "command conflict" and "adapterkit 0.1.0 (plugin commands) keeps it" in fault.error


def test_a_command_without_a_run_function_is_refused_as_a_faulty_plugin():
    registry = Registry().load_entry_points()
    registry.add_plugin(plugin_registering(Command("broken", run=None)), "broken", "adapterkit-broken", "1.0")
    assert "broken" not in registry.commands
    [fault] = [f for f in registry.faults if f.name == "broken"]
    assert "has no callable run" in fault.error
