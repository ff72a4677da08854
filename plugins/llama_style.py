"""Built-in plugin: the llama_style family (Mistral, Ministral, Qwen2, Qwen3, OLMo 2, Gemma 1-3) in llama_style.yaml, registered through the adapterkit entry points."""
from pathlib import Path

from adapterkit import hookimpl


@hookimpl
def register_architectures(register):
    register(Path(__file__).with_suffix(".yaml"))
