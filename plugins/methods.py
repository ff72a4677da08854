"""Built-in plugin: the editing methods that ship with adapterkit, registered like any third-party method."""
from adapterkit import hookimpl


@hookimpl
def register_methods(register):
    from adapterkit.methods import BUILTIN, described
    from adapterkit.arch.registry import LazyMethod

    for module, cls in BUILTIN:  # built on first edit: `plugins`, detect and validate read the description
        register(LazyMethod(cls, f"adapterkit.methods.{module}:{cls}", description=getattr(described, cls)))
