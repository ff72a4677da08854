"""Built-in plugin: the gpt_neox declaration in gpt_neox.yaml, registered through the adapterkit entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_suffix(".yaml"))
