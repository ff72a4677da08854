"""Built-in plugin: the opt declaration in opt.yaml, registered through the adapterkit entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_suffix(".yaml"))
