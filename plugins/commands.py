"""Built-in plugin: adapterkit's own commands, registered like any third-party command."""
import importlib

from adapterkit import hookimpl

BUILTIN = ("plugins", "detect", "validate", "new_plugin", "conformance", "trace", "stats", "edit", "train", "eval", "report",
           "evaluate", "convert", "demo")


@hookimpl
def register_commands(register):
    for module in BUILTIN:
        for command in importlib.import_module(f"adapterkit.cli.{module}").COMMANDS:
            register(command)
