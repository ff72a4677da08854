"""What an edit leaves behind: the originals of exactly the weights it touched, its deltas and metrics."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..checkpoints.placement import check_weights_in_memory
from ..errors import AdapterkitError
from ..files.atomic import atomic_path, check_free_space


def _delta_dtype(dtype: torch.dtype) -> torch.dtype:
    # One step wider than the weight, so original + delta gives the edited weight back bit for bit.
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def tensor_aliases(model) -> dict[str, str]:
    """Parameter names that reach another name's tensor (a tied lm-head): alias -> the name named_parameters() uses."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    return {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False) if canonical[id(p)] != n}


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy; from a GPU through page-locked memory, which copies several times faster than pageable."""
    if tensor.device.type != "cuda":
        return tensor.detach().to("cpu", copy=True)
    return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor.detach())


KEEP_PLACES = ("cpu", "device")


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
    originals_on: str = "cpu"  # where originals and deltas are kept: "cpu", or "device" (each weight's own)
    _aliases: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.originals_on not in KEEP_PLACES:
            raise AdapterkitError(f"originals_on={self.originals_on!r} is not a place to keep the originals",
                                  fix="use 'cpu' (host memory, the default) or 'device' (each weight's own device: "
                                      "faster to restore, at the cost of that device's memory)")

    def _kept(self, fresh: torch.Tensor) -> torch.Tensor:
        """Where this result keeps ``fresh`` (a tensor no one else holds): a host copy, or the tensor itself."""
        return host_copy(fresh) if self.originals_on == "cpu" else fresh

    # --- used by methods ----------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The one name a weight is kept under: a tied head's tensor is the embedding's, so edits through either
        name land on one original and one delta, and restore writes it once."""
        if self._aliases is None:
            self._aliases = tensor_aliases(self.model)
        return self._aliases.get(name, name)

    def parameter(self, name: str) -> torch.nn.Parameter:
        try:
            return self.model.get_parameter(name)
        except AttributeError:
            raise AdapterkitError(f"the model has no weight {name!r}",
                                  fix="check the hparams templates against model.named_parameters()") from None

    @torch.no_grad()
    def add(self, name: str, delta: torch.Tensor) -> None:
        """Add ``delta`` (same shape as the weight) in the weight's own dtype and device, keeping the original once."""
        name = self.canonical(name)
        weight = self.parameter(name)
        if weight.device.type == "meta":  # a method that names its weights to no check before the work
            self.restore(force=True)
            check_weights_in_memory(self.model, [name], f"{self.hparams.get('alg_name', 'the edit')}")
        if delta.shape != weight.shape:
            raise AdapterkitError(f"update for {name} has shape {tuple(delta.shape)}, the weight {tuple(weight.shape)}")
        stored = delta.to(device=weight.device, dtype=weight.dtype)
        if not bool(torch.isfinite(stored).all()):
            self._refuse_non_finite(name, "the update holds")
        if name not in self.originals:
            original = weight.detach().clone()
            self.originals[name] = self._kept(original)
        else:
            original = self.originals[name].to(weight.device)
        weight.add_(stored)
        if not bool(torch.isfinite(weight).all()) and bool(torch.isfinite(original).all()):
            weight.copy_(original)  # the sum overflowed the weight's dtype
            self._refuse_non_finite(name, f"adding the update overflows {weight.dtype} and gives")
        wide = _delta_dtype(weight.dtype)
        self.deltas[name] = self._kept(weight.detach().to(wide) - original.to(wide))

    def _refuse_non_finite(self, name: str, what: str) -> None:
        """Put every weight this edit touched back, then refuse: no NaN or inf ever stays in the model."""
        self.restore(force=True)
        named = ", ".join(r.origin or repr(r.prompt) for r in self.requests[:3]) or "the requests"
        more = f" (and {len(self.requests) - 3} more)" if len(self.requests) > 3 else ""
        method = self.hparams.get("alg_name", "the edit")
        raise AdapterkitError(
            f"{method} of {named}{more}: {what} non-finite numbers (NaN or inf) for {name}; "
            "the model's original weights were restored",
            fix="check the hyperparameters (a learning rate, clamp_norm_factor or mom2_update_weight of NaN, inf or "
                "extreme size) and the second-moment statistics; edit a float32 copy of a 16-bit model")

    # --- for users ----------------------------------------------------------------------------
    @property
    def touched(self) -> list[str]:
        return list(self.originals)

    @torch.no_grad()
    def restore(self, force: bool = False) -> None:
        """Put the original weights back, bit for bit."""
        for name, original in self.originals.items() if not force else ():
            weight = self.parameter(name)
            expected = (original.to(self.deltas[name].dtype) + self.deltas[name]).to(weight.dtype)
            if not torch.equal(weight.detach(), expected.to(weight.device)):
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
            "aliases": json.dumps({a: n for a, n in (self._aliases or {}).items() if n in self.deltas}),
        }
        check_free_space(path, sum(d.numel() * d.element_size() for d in self.deltas.values()), what="deltas file")
        with atomic_path(path) as tmp:
            save_file({n: d.to("cpu").contiguous() for n, d in self.deltas.items()}, str(tmp), metadata=metadata)

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
    by_tensor: dict[str, list[str]] = {}
    for name in deltas:
        by_tensor.setdefault(result.canonical(name), []).append(name)
    shared = [names for names in by_tensor.values() if len(names) > 1]
    if shared:
        raise AdapterkitError(f"{path}: {' and '.join(shared[0])} are one tensor in this model (a tied lm-head), "
                              "but the file holds a delta for each: applying both would add twice",
                              fix="apply these deltas to a model whose head is untied, as the one they were computed on")
    for name, delta in deltas.items():
        bad = int(delta.numel() - torch.isfinite(delta).sum())
        if bad:
            raise AdapterkitError(f"{path}: the delta of {name} holds {bad} non-finite value(s) (NaN or inf); "
                                  "nothing was applied", fix="write the deltas again from an edit that succeeds")
    check_weights_in_memory(model, [result.canonical(name) for name in deltas], f"applying {path}")
    for name in deltas:  # every check before the first write: a refused file leaves the model as it was
        if check_base and expected.get(name) and fingerprint(result.parameter(name)) != expected[name]:
            raise AdapterkitError(f"{path}: {name} differs from the weight these deltas were computed on",
                                  fix="apply them to the same base model, or pass check_base=False")
    for name, delta in deltas.items():
        weight = result.parameter(name)
        kept = result.canonical(name)
        result.originals[kept] = host_copy(weight)
        edited = (result.originals[kept].to(delta.dtype) + delta).to(weight.dtype)
        if not bool(torch.isfinite(edited).all()) and bool(torch.isfinite(result.originals[kept]).all()):
            del result.originals[kept]
            result.restore(force=True)
            raise AdapterkitError(f"{path}: applying the delta of {name} overflows {weight.dtype} to non-finite "
                                  "values (NaN or inf); the model's weights were left as they were",
                                  fix="apply the deltas to the model in the dtype they were computed on (float32)")
        weight.copy_(edited.to(weight.device))
        result.deltas[kept] = delta
    result.answerer = model
    return result
