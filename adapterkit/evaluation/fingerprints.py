"""What a run was measured on: a fingerprint of the model (its config and a hash of its weights as loaded), of
the data file, and the versions of the packages that did the work."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_fingerprint(config) -> dict:
    """The model type and a sha256 of the config (keys that name where or with which version it was saved left out)."""
    document = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    text = json.dumps(document, sort_keys=True, default=str)
    return {"model_type": document.get("model_type"), "config_sha256": hashlib.sha256(text.encode()).hexdigest()}


@torch.no_grad()
def weights_sha256(model) -> str:
    """sha256 over every parameter and buffer as loaded (name, dtype, shape, bytes), in name order: the weights that
    were measured, whatever file format and dtype they came from (and wherever accelerate placed them)."""
    from ..checkpoints.placement import readable

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        shape = tuple(tensor.shape)
        tensor = readable(model, name, tensor).detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{shape}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(model) -> dict:
    return {**config_fingerprint(model.config), "weights_sha256": weights_sha256(model),
            "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}


def package_versions() -> dict:
    from importlib import metadata

    from .. import __version__

    versions = {"adapterkit": __version__}
    for name in ("torch", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def data_fingerprint(path) -> dict:
    return {"path": str(path), "sha256": file_sha256(path), "bytes": Path(path).stat().st_size}
