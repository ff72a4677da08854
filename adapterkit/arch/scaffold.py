"""`adapterkit new-plugin`: a pip-installable plugin distribution drafted from a checkpoint's inferred declaration.

The distribution holds the declaration (each role annotated with how inference found it, and with a tiny_config
that builds), the three lines registering it through the `adapterkit` entry points, a pyproject, and a test that
checks the declaration as `adapterkit validate` does, runs detect for every method on a tiny checkpoint, and runs
`adapterkit conformance` on the distribution (ROME only, to stay fast; the full run is the bar for a PR).
"""
from __future__ import annotations

import datetime
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from ..errors import AdapterkitError, PluginError
from ..files.atomic import follow_umask

METHODS = ("ROME", "MEMIT", "PMET", "MEND", "SERAC")


def new_plugin(checkpoint, name: str, out, *, overwrite: bool = False) -> Path:
    """Write the distribution ``name`` (e.g. adapterkit-newarch) for the checkpoint's architecture into ``out``."""
    from .. import __version__
    from ..checkpoints.loading import checkpoint_dir, read_config
    from .registry import get_registry

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
        raise AdapterkitError(f"{name!r} is not a distribution name", fix="use letters, digits, '-', '_' or '.', e.g. adapterkit-newarch")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise AdapterkitError(f"{out}: exists and is not empty", fix="choose another -o directory, or pass --overwrite")
    path = checkpoint_dir(checkpoint)
    config = read_config(path)
    registry = get_registry()
    declared = [s for s in registry.architectures if s.matches(config)]
    if declared:
        raise PluginError(f"{path}: model_type {config.get('model_type')!r} is already declared by {declared[0].name!r} "
                          f"({declared[0].distribution} {declared[0].version})",
                          fix="new-plugin drafts plugins for model types no plugin declares; copy that declaration to change it")
    spec = registry.infer(config, source=str(path / "config.json"))
    inference = spec.extras["inference"]
    declaration = dict(inference.declaration)
    declaration["description"] = f"{config.get('model_type')} decoders (drafted by adapterkit new-plugin; review each role)"
    declaration["tiny_config"] = _tiny_config(config)
    package = re.sub(r"[^a-z0-9_]", "_", name.lower())
    files = {
        "pyproject.toml": _pyproject(name, package, declaration["name"], __version__),
        f"{package}/__init__.py": _init(declaration["name"]),
        f"{package}/{declaration['name']}.yaml": _declaration_text(declaration, inference, path),
        f"tests/test_{declaration['name']}.py": _test(declaration["name"], package, name),
        "README.md": _readme(name, declaration, path),
    }
    _write_tree(out, files)
    return out / package / f"{declaration['name']}.yaml"


def _tiny_config(config) -> dict:
    from .tinyconfig import tiny_config

    try:  # the checkpoint's own config shrunk keeps its options; the class defaults are the fallback
        return tiny_config(config["model_type"], base={k: v for k, v in config.items() if k != "architectures"})
    except AdapterkitError:
        return tiny_config(config["model_type"])


def _declaration_text(declaration: dict, inference, checkpoint: Path) -> str:
    lines = [f"# Drafted by `adapterkit new-plugin` from {checkpoint} on {datetime.date.today().isoformat()}.",
             "# Each role as inference found it; check them, then `adapterkit validate` this file and run the tests.",
             "# Default layers: ROME layer 5 and MEMIT layers 4-8 of a 32-layer reference, rescaled to the model's depth;",
             "# replace them with published choices for this family where there are any.", "#"]
    lines += [f"#   {f.role:<17} {f.path:<40} {f.confidence:<6} {f.how}" for f in inference.ordered_findings]
    return "\n".join(lines) + "\n" + yaml.safe_dump(declaration, sort_keys=False, default_flow_style=None, width=120)


def _pyproject(name: str, package: str, arch: str, version: str) -> str:
    return f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "adapterkit plugin: the {arch} architecture, declared in YAML"
requires-python = ">=3.10"
dependencies = ["adapterkit>={version}"]

[project.optional-dependencies]
test = ["pytest>=7"]

[project.entry-points.adapterkit]
{arch} = "{package}"

[tool.setuptools]
packages = ["{package}"]

[tool.setuptools.package-data]
{package} = ["*.yaml"]
'''


def _init(arch: str) -> str:
    return f'''"""An adapterkit plugin: the {arch} declaration, found through the `adapterkit` entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_name("{arch}.yaml"))
'''


def _test(arch: str, package: str, name: str) -> str:
    return f'''"""The {arch} plugin, installed: its declaration validates, and detect works for every method on a tiny model."""
from pathlib import Path

import pytest

from adapterkit.arch.detect import detect
from adapterkit.checkpoints.build import build_model
from adapterkit.arch.conformance import ConformanceSettings, run_conformance
from adapterkit.arch.registry import get_registry
from adapterkit.arch.validate import validate_file

DECLARATION = Path(__file__).parents[1] / "{package}" / "{arch}.yaml"


def test_the_declaration_passes_adapterkit_validate():
    assert validate_file(DECLARATION) == ""


def test_the_installed_plugin_is_registered():
    assert get_registry().architecture("{arch}").distribution == "{name}"


@pytest.mark.parametrize("method", {list(METHODS)!r})
def test_detect_uses_the_plugin_on_a_tiny_checkpoint(method, tmp_path):
    spec = get_registry().architecture("{arch}")
    build_model(spec.tiny_config, spec).save_pretrained(tmp_path)
    hparams = detect(tmp_path, method=method)
    assert hparams.declaration_source == "plugin" and hparams["architecture"] == "{arch}"


def test_the_distribution_passes_adapterkit_conformance(tmp_path):
    # ROME only, to stay fast; before a PR run all five: `adapterkit conformance .`
    report = run_conformance(Path(__file__).parents[1], ConformanceSettings(methods=("ROME",), cache_dir=tmp_path),
                             say=lambda line: None)
    assert report.passed, report.table()
'''


def _readme(name: str, declaration: dict, checkpoint: Path) -> str:
    return (f"# {name}\n\nAn adapterkit plugin declaring the `{declaration['name']}` architecture "
            f"(model_type {declaration['match']['model_types'][0]!r}), drafted by `adapterkit new-plugin {checkpoint}`.\n\n"
            "```\npip install -e \".[test]\"\nadapterkit plugins\npython -m pytest -q\nadapterkit conformance .\n```\n")


def _write_tree(out: Path, files: dict[str, str]) -> None:
    """All files into a sibling temporary directory, then renamed into place: no half-written distribution."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        follow_umask(staging, directory=True)  # mkdtemp's 0700 would make the distribution private
        for relative, text in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
