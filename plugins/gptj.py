"""Built-in plugin: the gptj declaration in gptj.yaml, registered through the adapterkit entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_suffix(".yaml"))
