"""Commands that need no model start without importing torch or transformers (timings: benchmarks/bench_cli_startup.py)."""
import subprocess
import sys

import pytest

from conftest import BUILTIN_METHODS

PROBE = ("import sys; from adapterkit.cli import main; code = main(sys.argv[1:]); "
         "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
         "print('imported:', heavy, file=sys.stderr); sys.exit(code or (3 if heavy else 0))")


def run_fresh(*args) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter; exit 3 where it imported torch or transformers."""
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True)


def test_listing_plugins_imports_neither_torch_nor_transformers():
    proc = run_fresh("plugins")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_detect_and_validate_import_neither_torch_nor_transformers(tiny_gpt2_checkpoint, method, tmp_path):
    hparams = tmp_path / "hparams.yaml"
    # without --allow-partial-weights, detect checks that the weights cover the model transformers builds
    detect = ["detect", tiny_gpt2_checkpoint, "--method", method, "--allow-partial-weights"]
    for args in ([*detect, "-o", hparams], ["validate", hparams], [*detect, "--format", "easyedit"]):
        proc = run_fresh(*args)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"


def test_a_lazily_registered_method_loads_on_first_use():
    from adapterkit.methods import EditMethod
    from adapterkit.arch.registry import LazyMethod, Registry

    registry = Registry().load_entry_points()
    assert isinstance(registry.methods["ROME"], LazyMethod)
    method = registry.method("rome")
    assert isinstance(method, EditMethod)  # the method contract, checked when it was built
    assert method.name == "ROME" and method.distribution == "adapterkit" and method.schema == "rome"
    assert registry.method("ROME") is method


def test_a_described_method_answers_detect_without_being_built():
    from adapterkit.methods import described
    from adapterkit.arch.registry import Registry

    registry = Registry().load_entry_points()
    assert registry.method_description("pmet") is described.PMET
    assert registry.methods["PMET"]._method is None
    assert isinstance(registry.method("pmet"), described.PMET)  # what detect read is what edits
