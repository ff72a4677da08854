"""The places that list what adapterkit ships agree: pyproject's entry points, plugins/, the registry's
built-ins, the tests' lists and tables, and CI's check of the wheel."""
import ast
import re
import tomllib
from pathlib import Path

import adapterkit_plugins

from adapterkit.methods import builtin_methods
from adapterkit.arch.registry import get_registry
from conftest import ARCHS, BUILTIN_ARCHS, BUILTIN_METHODS
from test_registry import MATCHING_CONFIGS

REPO = Path(__file__).parents[1]
DISTRIBUTION = "adapterkit"


def entry_points() -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return pyproject["project"]["entry-points"]["adapterkit"]


def builtin_plugins():
    return [p for p in get_registry().plugins if p.distribution == DISTRIBUTION]


def test_every_entry_point_loads_as_a_builtin_plugin():
    registry = get_registry()
    assert not [f for f in registry.faults if f.distribution == DISTRIBUTION]
    assert {p.name for p in builtin_plugins()} == set(entry_points())
    for name, target in entry_points().items():
        assert target == f"adapterkit_plugins.{name}", f"{name} = {target!r}: built-in plugins live in plugins/{name}"


def test_every_declaration_in_plugins_is_registered_once():
    root = Path(adapterkit_plugins.__file__).parent
    on_disk = sorted(str(p.relative_to(REPO / "plugins")) for p in (REPO / "plugins").rglob("*.yaml"))
    # a family declaration (variants) is the source of several architectures: "file#/variants/NAME"
    sources = {(Path(s.source.partition("#")[0]), s.plugin) for s in get_registry().architectures
               if s.distribution == DISTRIBUTION}
    registered = sorted(str(path.relative_to(root)) for path, _ in sources)
    assert registered == on_disk


def test_the_tests_list_the_builtin_architectures():
    builtins = [a for p in builtin_plugins() for a in p.architectures]
    assert sorted(builtins) == sorted(BUILTIN_ARCHS)
    assert set(BUILTIN_ARCHS) <= set(ARCHS)
    others = {s.name for s in get_registry().architectures if s.distribution != DISTRIBUTION}
    assert set(ARCHS) == set(BUILTIN_ARCHS) | others
    assert {arch for _, arch in MATCHING_CONFIGS} == set(BUILTIN_ARCHS)


def test_the_tests_list_the_builtin_methods():
    shipped = [m for p in builtin_plugins() for m in p.methods]
    assert shipped == [m.name for m in builtin_methods()] == list(BUILTIN_METHODS)


def test_ci_checks_the_wheel_for_every_builtin_architecture():
    script = (REPO / ".ci" / "run").read_text()
    listed = re.search(r"assert (\{[^}]*\}) <= names", script)
    assert listed, ".ci/run no longer checks the wheel's architectures"
    assert ast.literal_eval(listed.group(1)) == set(BUILTIN_ARCHS)
