"""AlphaEdit: Null-Space Constrained Knowledge Editing (Fang et al., ICLR 2025).

MEMIT's values, keys and residuals (memit.py), with one change to each layer's update: it may only move keys
in the null space of the preserved knowledge. P projects onto the eigenvectors of the keys' second moment C
whose eigenvalues are below ``nullspace_threshold`` (the directions the statistics' keys barely use), and

    Delta = R K^T P (K K^T P + L2 I)^-1,

so Delta k ~ 0 for the keys C describes, and ``L2`` keeps the update small instead of lambda C. In a stream of
batches (adapterkit.EditStream) the paper's sequential algorithm also keeps the keys K_p of every earlier batch's
edits, and each later update is

    Delta = R K^T P (K_p K_p^T P + K K^T P + L2 I)^-1,

which keeps Delta K_p small, so the earlier edits' outputs stay as they were. A lone ``edit`` call has no K_p.
"""
from __future__ import annotations

import warnings
import weakref

import torch

from ..errors import AdapterkitError, AdapterkitWarning
from . import described
from .memit import MEMIT
from ..settings.methods import AlphaEditSettings


class AlphaEdit(described.AlphaEdit, MEMIT):
    def __init__(self):
        # id(second moment), threshold -> (the moment, weakly, and its null-space basis): one eigendecomposition per
        # statistics file and threshold, not one per edit (the moments stay in the statistics' own cache)
        self._bases: dict[tuple[int, float], tuple[weakref.ref, torch.Tensor]] = {}

    def layer_update(self, keys, residuals, mom2, settings: AlphaEditSettings, earlier=None):
        if mom2 is None:
            raise AdapterkitError("AlphaEdit projects its updates with the keys' second-moment statistics, and "
                                  "mom2_adjustment is false",
                                  fix="set mom2_adjustment: true (and mom2_corpus or stats_dir, as for MEMIT)")
        return null_space_update(keys, residuals, self.basis(mom2, settings.nullspace_threshold, keys.device), settings.L2,
                                 earlier)

    def basis(self, mom2: torch.Tensor, threshold: float, device) -> torch.Tensor:
        key = (id(mom2), threshold)
        kept = self._bases.get(key)
        if kept is None or kept[0]() is not mom2:
            self._bases = {k: v for k, v in self._bases.items() if v[0]() is not None}
            kept = (weakref.ref(mom2), null_space(mom2.to(device), threshold).float().cpu())
            self._bases[key] = kept
        return kept[1]


CROWDED_NULL_SPACE = 0.05  # share of the preserved keys' second moment a null space may hold before a warning


def null_space(mom2: torch.Tensor, threshold: float) -> torch.Tensor:
    """An orthonormal basis [in, m] of the directions in which ``mom2`` has eigenvalues below ``threshold``.
    Warns where those directions hold more than ``CROWDED_NULL_SPACE`` of the moment's trace: the threshold is an
    absolute eigenvalue, and keys of another scale than the published models' put used directions under it."""
    eigenvalues, eigenvectors = torch.linalg.eigh(mom2.double())
    inside = eigenvalues < threshold
    basis = eigenvectors[:, inside]
    if basis.shape[1] == 0:
        raise AdapterkitError(
            f"AlphaEdit's null space is empty: every eigenvalue of the keys' second moment is at least "
            f"nullspace_threshold ({threshold:g}; the smallest is {eigenvalues[0].item():.3g})",
            fix=f"raise nullspace_threshold above {eigenvalues[0].item():.3g}: the published 0.02 is for "
                "Wikipedia statistics of billion-parameter models")
    share = (eigenvalues[inside].sum() / eigenvalues.sum()).item()
    if share > CROWDED_NULL_SPACE:
        warnings.warn(
            f"AlphaEdit's null space at nullspace_threshold {threshold:g} is {basis.shape[1]} of "
            f"{len(eigenvalues)} key directions, holding {share:.0%} of the preserved keys' second moment "
            f"(eigenvalues {eigenvalues[0].item():.2g} to {eigenvalues[-1].item():.2g}): updates there move what "
            f"the statistics preserve, so locality falls as edits pile up. A lower threshold keeps more of it and "
            f"leaves the edits less room (docs/streams.md, \"AlphaEdit's null space\")", AdapterkitWarning,
            stacklevel=2)
    return basis


def null_space_update(keys: torch.Tensor, residuals: torch.Tensor, basis: torch.Tensor, l2: float,
                      earlier: torch.Tensor | None = None) -> torch.Tensor:
    """``R K^T P ((K_p K_p^T + K K^T) P + l2 I)^-1`` as [out, in], with P = basis basis^T, for keys [n, in], residuals
    [n, out] and ``earlier`` = K_p K_p^T [in, in], the earlier edits' keys (none: a lone edit).

    Solved as its transpose, ``(P (K_p K_p^T + K^T K) + l2 I) X = P K^T R``, so P is never formed."""
    k = keys.double()
    r = residuals.to(k.device, torch.float64)
    u = basis.to(k.device, torch.float64)
    moment = k.T @ k if earlier is None else k.T @ k + earlier.to(k.device, torch.float64)
    system = u @ (u.T @ moment)
    system.diagonal().add_(l2)
    return torch.linalg.solve(system, u @ (u.T @ (k.T @ r))).T
