"""Built-in plugin: ChatGLM3, with a native model class (the published remote code does not run on transformers 5)."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_name("chatglm3.yaml"))
