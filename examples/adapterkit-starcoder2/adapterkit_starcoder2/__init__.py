"""A third-party adapterkit plugin: nothing but a declaration, found through the `adapterkit` entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_name("starcoder2.yaml"))
