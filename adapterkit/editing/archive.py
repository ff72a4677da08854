"""A trained editor on disk: one safetensors file with the editor's tensors and its metadata.

``editor.safetensors`` holds the editor's state (tied tensors stored once, their other names under
``aliases``) and a header with ``format`` (ARCHIVE_FORMAT), ``method``, ``architecture``, the structural
hparams and whatever the method's task adds (MEND: ``inner_params`` with their shapes). ``read_archive``
refuses another method's editor; ``check_archive_fits`` refuses one trained for another model or shape.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ArchiveError
from ..files.atomic import atomic_path

EDITOR_FILE = "editor.safetensors"
ARCHIVE_FORMAT = "adapterkit-editor/1"


# --- tensors in and out of safetensors --------------------------------------------------------------
def module_tensors(module: torch.nn.Module, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The module's state as distinct tensors, and which names alias another (tied weights)."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride())) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[prefix + name] = seen[key]
            continue
        tensors[prefix + name] = tensor.detach().to("cpu").contiguous().clone()
        if key is not None:
            seen[key] = prefix + name
    return tensors, aliases


def load_module_tensors(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str],
                        prefix: str, where: str) -> None:
    state = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    for alias, target in aliases.items():
        if alias.startswith(prefix):
            state[alias[len(prefix):]] = tensors[target]
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(expected) & set(state) if tuple(expected[n].shape) != tuple(state[n].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:4]}" if missing else "",
            f"unexpected {unexpected[:4]}" if unexpected else "",
            "shape differs for " + ", ".join(f"{n} {tuple(state[n].shape)} vs {tuple(expected[n].shape)}" for n in wrong[:4])
            if wrong else "") if part)
        raise ArchiveError(f"{where}: the stored editor does not fit the one these hparams build ({detail})",
                           fix="use the hparams.yaml saved beside the archive, or train a new editor for this model")
    module.load_state_dict(state)


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=header)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ArchiveError(f"{path}: not a readable safetensors file ({exc})",
                           fix="train the editor again; a partial copy is the usual cause") from None
    metadata = {}
    for key, value in header.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return tensors, metadata


# --- archives: what apply() loads ------------------------------------------------------------------
def archive_file(archive) -> Path:
    path = Path(archive)
    if path.is_dir():
        path = path / EDITOR_FILE
    if not path.is_file():
        raise ArchiveError(f"{archive}: no trained editor there (expected {EDITOR_FILE})",
                           fix="pass the --out directory of `adapterkit train`, or its editor.safetensors")
    return path


def settings_digest(hparams: Mapping[str, Any]) -> str:
    """A short digest of the settings an editor is trained with: part of a cached editor's name, so that one trained
    with other settings is trained again rather than refused by the archive check."""
    import hashlib

    return hashlib.sha256(json.dumps(dict(hparams), sort_keys=True, default=str).encode()).hexdigest()[:12]


def save_archive(path: Path, editor: torch.nn.Module, metadata: Mapping[str, Any]) -> None:
    tensors, aliases = module_tensors(editor)
    write_safetensors(path, tensors, {"format": ARCHIVE_FORMAT, "aliases": aliases, **metadata})


def read_archive(archive, method: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    path = archive_file(archive)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"{path}: not an adapterkit editor archive", fix="pass a directory written by `adapterkit train`")
    if str(metadata.get("method", "")).upper() != method.upper():
        raise ArchiveError(f"{path}: holds a {metadata.get('method')} editor, not a {method} one",
                           fix=f"point archive at a {method} editor, or set alg_name: {metadata.get('method')}")
    return tensors, metadata, path


def check_archive_fits(path: Path, metadata: Mapping[str, Any], *, architecture: str,
                       shapes: Mapping[str, Sequence[int]] | None, hparams: Mapping[str, Any],
                       structural_keys: Sequence[str]) -> None:
    """Raise ArchiveError naming each mismatch: architecture, edited weights and their shapes, structural hparams."""
    stored_arch = metadata.get("architecture")
    if stored_arch != architecture:
        raise ArchiveError(f"{path}: this editor was trained for the {stored_arch!r} architecture; the model is {architecture!r}",
                           fix=f"train an editor for this model (`adapterkit train MODEL --hparams ...`), or load a {stored_arch} model")
    if shapes is not None:
        stored = {n: list(s) for n, s in (metadata.get("inner_params") or {}).items()}
        wanted = {n: list(s) for n, s in shapes.items()}
        if stored != wanted:
            only_stored = sorted(set(stored) - set(wanted))
            only_wanted = sorted(set(wanted) - set(stored))
            reshaped = sorted(n for n in set(stored) & set(wanted) if stored[n] != wanted[n])
            parts = [f"trained on {only_stored}" if only_stored else "", f"hparams ask for {only_wanted}" if only_wanted else "",
                     "shapes differ: " + ", ".join(f"{n} {stored[n]} (archive) vs {wanted[n]} (model)" for n in reshaped)
                     if reshaped else ""]
            raise ArchiveError(f"{path}: the editor's inner_params do not match: " + "; ".join(p for p in parts if p),
                               fix="set inner_params to those in the hparams.yaml beside the archive, "
                                   "or train an editor for this model and these weights")
    stored_hp = metadata.get("hparams") or {}
    differing = [k for k in structural_keys if k in hparams and k in stored_hp and hparams[k] != stored_hp[k]]
    if differing:
        listing = ", ".join(f"{k}={hparams[k]!r} (archive: {stored_hp[k]!r})" for k in differing)
        raise ArchiveError(f"{path}: the hparams describe a different editor than the archive holds: {listing}",
                           fix="use the hparams.yaml saved beside the archive, or train a new editor with these hparams")
