"""Built-in plugin: the editing methods that ship with adapterkit, registered like any third-party method."""
from adapterkit import hookimpl


@hookimpl
def register_methods(register):
    from adapterkit.methods import builtin_methods

    for method in builtin_methods():
        register(method)
