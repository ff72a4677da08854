"""A local checkpoint directory: config.json, tensor names and shapes from headers, model construction.

Nothing here downloads, and nothing executes code shipped inside a checkpoint.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import CheckpointError
from .registry import get_registry
from .spec import ArchSpec

SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                           "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class TensorIndex:
    """Tensor names -> shapes (None where only the name is known, as in a .bin index)."""
    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    source: str = ""

    @property
    def names(self):
        return self.shapes.keys()


def checkpoint_dir(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory", fix="pass the local directory that holds config.json and the weights (adapterkit never downloads)")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory", fix="pass the checkpoint directory, not a file inside it")
    return path


def read_config(path) -> dict:
    config_path = checkpoint_dir(path) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing", fix="a checkpoint directory needs the config.json written by save_pretrained")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}",
                              fix="repair the file, or write it again with config.save_pretrained") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    if "model_type" not in config and "architectures" not in config:
        raise CheckpointError(f"{config_path}: has neither model_type nor architectures",
                              fix="add \"model_type\" as save_pretrained writes it, so the matching plugin can be found")
    return config


def safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: tensor names, dtypes and shapes, without reading weights."""
    try:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})",
                              fix="re-download or re-save the file; a partial copy is the usual cause") from None
    header.pop("__metadata__", None)
    return header


def read_tensor_index(path) -> TensorIndex | None:
    """Tensor names and shapes from safetensors headers, else names from a *.index.json; None if neither."""
    path = checkpoint_dir(path)
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        shapes = {}
        for shard in shards:
            shapes.update({name: tuple(info["shape"]) for name, info in safetensors_header(shard).items()})
        return TensorIndex(shapes, source=", ".join(s.name for s in shards))
    for index_file in sorted(path.glob("*.index.json")):
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index_file}: not a valid index ({exc})", fix="it needs a \"weight_map\" object of tensor name -> file") from None
        return TensorIndex({name: None for name in weight_map}, source=index_file.name)
    return None


def config_object(config: Mapping[str, Any], spec: ArchSpec):
    """A transformers config object for ``config`` (the plugin's native config class where it has one)."""
    native = spec.config_class()
    config = {k: v for k, v in config.items() if k not in ("auto_map", "_name_or_path", "transformers_version")}
    if native is not None:
        return native(**config)
    from transformers import AutoConfig

    model_type = config.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **config)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"transformers does not know model_type {model_type!r} ({exc})",
                              fix=f"upgrade transformers, or give the {spec.name} plugin a native config_class/model_class") from None


def model_class(spec: ArchSpec):
    native = spec.model_class()
    if native is not None:
        return native
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def build_model(config: Mapping[str, Any], spec: ArchSpec | None = None, *, dtype=None):
    """A randomly initialised model from a config dict (used for tiny test models and for meta-device shapes)."""
    spec = spec or get_registry().for_config(config)
    config_obj = config_object(config, spec)
    cls = model_class(spec)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return cls.from_config(config_obj, **kwargs) if hasattr(cls, "from_config") else cls._from_config(config_obj, **kwargs)


def meta_tensor_index(config: Mapping[str, Any], spec: ArchSpec) -> TensorIndex:
    """Names and shapes from a model built on the meta device (no memory, no weights read)."""
    import torch

    with torch.device("meta"):
        model = build_model(config, spec)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return TensorIndex(shapes, source="meta-device build from config.json")


def load_model(path, *, dtype="auto", device=None, tokenizer: bool = True):
    """Model and tokenizer from a local checkpoint directory (tokenizer is None where the dir has none)."""
    path = checkpoint_dir(path)
    config = read_config(path)
    spec = get_registry().for_config(config, source=str(path / "config.json"), infer=True)
    cls = model_class(spec)
    kwargs = {"dtype": dtype}
    if spec.config_class() is not None:
        kwargs["config"] = config_object(config, spec)
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot load the weights ({exc})",
                              fix="check that the weight files listed in the index are all present") from None
    if device is not None:
        model.to(device)
    model.eval()
    return model, (load_tokenizer(path) if tokenizer else None)


def load_tokenizer(path):
    path = Path(path)
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        import warnings

        warnings.warn(f"{path}: the tokenizer could not be loaded ({exc}); returning tok=None")
        return None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
