"""Apply a weight update in the layout the architecture declares.

Methods think in ``[out, in]`` (``W k = v``); the architecture's spec turns that into the layout its weights are
stored in (``ArchSpec.as_stored``). The update goes through the edit's ledger (``ledger.add``), which keeps the original.
"""
from __future__ import annotations

import torch

from ..errors import AdapterkitError


def low_rank(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left @ right.T`` for ``left`` [out, r] and ``right`` [in, r] (1-D vectors are rank one)."""
    left = left[:, None] if left.dim() == 1 else left
    right = right[:, None] if right.dim() == 1 else right
    return left.double() @ right.double().T


def apply_update(ledger, spec, name: str, delta: torch.Tensor | None = None, *,
                 left: torch.Tensor | None = None, right: torch.Tensor | None = None) -> torch.Tensor:
    """Add ``delta`` ([out, in]) or ``left @ right.T`` to weight ``name``; returns the update as stored."""
    if delta is None:
        if left is None or right is None:
            raise ValueError("apply_update needs delta, or left and right")
        delta = low_rank(left, right)
    stored = spec.as_stored(delta)
    shape = tuple(ledger.parameter(name).shape)
    if tuple(stored.shape) != shape:
        raise AdapterkitError(
            f"an update of {name} is [out, in] = {list(delta.shape)}, which does not fit the weight {list(shape)} "
            f"in the declared {spec.weight_layout!r} layout",
            fix=f"check weight_layout in the {spec.name} declaration ({spec.source}) and the hparams' *_module_tmp keys")
    ledger.add(name, stored)
    return stored


def spread_update(keys: torch.Tensor, residuals: torch.Tensor, mom2: torch.Tensor | None, mom2_update_weight: float,
                  earlier: torch.Tensor | None = None) -> torch.Tensor:
    """MEMIT's least-squares update ``R K^T (lambda C + K K^T)^-1`` as [out, in], for keys [n, in] and residuals [n, out].

    ``C`` is the keys' second moment (identity when ``mom2`` is None); computed as
    ``solve(lambda C + K^T K, K^T R)^T``, which needs no [n, in] intermediate beyond the keys. ``earlier``: the
    second moment ``K_p K_p^T`` of earlier edits' keys (a stream's, with ``stream_preserve_edits``), preserved
    beside C with weight one, as each of the batch's own keys counts: ``R K^T (lambda C + K_p K_p^T + K K^T)^-1``.
    """
    k = keys.double()
    r = residuals.to(k.device, torch.float64)
    c = torch.eye(k.shape[1], dtype=torch.float64, device=k.device) if mom2 is None else mom2.to(k.device, torch.float64)
    system = mom2_update_weight * c + k.T @ k
    if earlier is not None:
        system = system + earlier.to(k.device, torch.float64)
    return torch.linalg.solve(system, k.T @ r).T
