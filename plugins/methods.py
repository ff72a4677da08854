"""Built-in plugin: the editing methods that ship with adapterkit, registered like any third-party method."""
from adapterkit import hookimpl


@hookimpl
def register_methods(register):
    from adapterkit.methods import BUILTIN
    from adapterkit.registry import LazyMethod

    for module, cls in BUILTIN:  # imported on first use: `adapterkit plugins` needs only their names
        register(LazyMethod(cls, f"adapterkit.methods.{module}:{cls}"))
