"""What an edit leaves behind: the originals of exactly the weights it touched, its deltas and metrics."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import AdapterkitError
from ..fileio import atomic_path


def _delta_dtype(dtype: torch.dtype) -> torch.dtype:
    # One step wider than the weight, so original + delta gives the edited weight back bit for bit.
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def fingerprint(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class EditResult:
    model: Any
    hparams: dict          # the settings that ran (settings.to_dict(): every default filled in), as a hyperparameter dict
    requests: list = field(default_factory=list)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    answerer: Any = None   # what to query after the edit: the model itself, or a method's wrapper (SERAC)
    restored: bool = False

    # --- used by methods ----------------------------------------------------------------------
    def parameter(self, name: str) -> torch.nn.Parameter:
        try:
            return self.model.get_parameter(name)
        except AttributeError:
            raise AdapterkitError(f"the model has no weight {name!r}",
                                  fix="check the hparams templates against model.named_parameters()") from None

    @torch.no_grad()
    def add(self, name: str, delta: torch.Tensor) -> None:
        """Add ``delta`` (same shape as the weight) in the weight's own dtype and device, keeping the original once."""
        weight = self.parameter(name)
        if delta.shape != weight.shape:
            raise AdapterkitError(f"update for {name} has shape {tuple(delta.shape)}, the weight {tuple(weight.shape)}")
        if name not in self.originals:
            self.originals[name] = weight.detach().to("cpu", copy=True)
        weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
        wide = _delta_dtype(weight.dtype)
        self.deltas[name] = weight.detach().to("cpu", wide) - self.originals[name].to(wide)

    # --- for users ----------------------------------------------------------------------------
    @property
    def touched(self) -> list[str]:
        return list(self.originals)

    @torch.no_grad()
    def restore(self, force: bool = False) -> None:
        """Put the original weights back, bit for bit."""
        for name, original in self.originals.items():
            weight = self.parameter(name)
            expected = (original.to(self.deltas[name].dtype) + self.deltas[name]).to(weight.dtype)
            if not force and not torch.equal(weight.detach().cpu(), expected):
                raise AdapterkitError(
                    f"{name} changed after this edit was applied (a later edit?); restoring would undo that too",
                    fix="restore later edits first (newest first), or call restore(force=True)")
        for name, original in self.originals.items():
            self.parameter(name).copy_(original)
        self.restored = True

    def save(self, path) -> None:
        """Write the deltas (safetensors, atomically) with the settings that ran and the originals' fingerprints as metadata."""
        metadata = {
            "format": "adapterkit-deltas/1",
            "hparams": json.dumps(self.hparams, default=str),
            "originals": json.dumps({n: fingerprint(t) for n, t in self.originals.items()}),
        }
        with atomic_path(path) as tmp:
            save_file({n: d.contiguous() for n, d in self.deltas.items()}, str(tmp), metadata=metadata)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.restored:
            self.restore()
        return False


@torch.no_grad()
def apply_deltas(model, path, check_base: bool = True) -> EditResult:
    """Apply a deltas file written by ``EditResult.save``; returns an EditResult that can restore."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "adapterkit-deltas/1":
        raise AdapterkitError(f"{path}: not an adapterkit deltas file", fix="pass a file written by EditResult.save or `adapterkit edit --deltas-only`")
    deltas = load_file(str(path))
    expected = json.loads(metadata.get("originals", "{}"))
    result = EditResult(model=model, hparams=json.loads(metadata.get("hparams", "{}")))
    for name, delta in deltas.items():
        weight = result.parameter(name)
        if check_base and expected.get(name) and fingerprint(weight) != expected[name]:
            raise AdapterkitError(f"{path}: {name} differs from the weight these deltas were computed on",
                                  fix="apply them to the same base model, or pass check_base=False")
        result.originals[name] = weight.detach().to("cpu", copy=True)
        edited = (result.originals[name].to(delta.dtype) + delta).to(weight.dtype)
        weight.copy_(edited.to(weight.device))
        result.deltas[name] = delta
    result.answerer = model
    return result
