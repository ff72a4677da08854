"""The hooks an adapterkit plugin implements.

A plugin module marks functions with ``@adapterkit.hookimpl`` and is found through the
``adapterkit`` entry-point group (built-ins use the same group).
"""
import pluggy

PROJECT = "adapterkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_architectures(register):
    """Register architecture declarations: call ``register(declaration)`` with a dict or a YAML path."""


@hookspec
def register_methods(register):
    """Register editing methods: call ``register(method)`` with an instance of an ``adapterkit.methods.EditMethod`` subclass."""


@hookspec
def register_commands(register):
    """Register CLI commands: call ``register(command)`` with an ``adapterkit.cli.Command`` (``adapterkit NAME``)."""
