"""Built-in plugin: the gpt_neo declaration in gpt_neo.yaml, registered through the adapterkit entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_suffix(".yaml"))
