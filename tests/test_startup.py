"""Commands that need no model start without importing torch or transformers (timings: benchmarks/bench_cli_startup.py)."""
import subprocess
import sys

PROBE = ("import sys; from adapterkit.cli import main; code = main(sys.argv[1:]); "
         "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
         "print('imported:', heavy, file=sys.stderr); sys.exit(code or (3 if heavy else 0))")


def test_listing_plugins_imports_neither_torch_nor_transformers():
    proc = subprocess.run([sys.executable, "-c", PROBE, "plugins"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_lazily_registered_method_loads_on_first_use():
    from adapterkit.methods import EditMethod
    from adapterkit.registry import LazyMethod, Registry

    registry = Registry().load_entry_points()
    assert isinstance(registry.methods["ROME"], LazyMethod)
    method = registry.method("rome")
    assert isinstance(method, EditMethod)  # the method contract, checked when it was built
    assert method.name == "ROME" and method.distribution == "adapterkit" and method.schema == "rome"
    assert registry.method("ROME") is method
