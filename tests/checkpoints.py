"""Tiny random checkpoints of every registered architecture, written to disk as save_pretrained does."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from adapterkit.checkpoint import build_model
from adapterkit.registry import get_registry


def write_tiny_checkpoint(arch: str, directory: Path, **overrides) -> Path:
    spec = get_registry().architecture(arch)
    config = {**spec.tiny_config, **overrides}
    torch.manual_seed(0)
    model = build_model(config, spec)
    model.save_pretrained(directory)
    # save_pretrained may rewrite config keys; keep the declaration's view authoritative for the tests
    saved = json.loads((directory / "config.json").read_text())
    saved.update(overrides)
    (directory / "config.json").write_text(json.dumps(saved, indent=2))
    return directory


def write_index_only_checkpoint(directory: Path, config: dict, tensor_names) -> Path:
    """A checkpoint directory holding config.json and a *.index.json but no weight files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    weight_map = {name: "pytorch_model-00001-of-00001.bin" for name in tensor_names}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory
