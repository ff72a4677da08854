"""MEND: Model Editor Networks with Gradient Decomposition (Mitchell et al., 2022, "Fast Model Editing at Scale").

For a linear layer W with input u and output gradient delta, the fine-tuning gradient of one token is
the rank-one ``delta u^T``. MEND edits with these factors instead of the full gradient:
  1. Run the edit example (prompt + new target) and backpropagate its NLL; hooks keep each inner weight's
     input u_t and output gradient delta_t at every token t.
  2. Normalise u and delta with running mean / std (collected while training), and pass them through a
     small network g shared by all weights of one shape: a low-rank MLP initialised to the identity, with
     a learned per-weight scale and offset (``shared``: the weight's index among those of its shape).
  3. The pseudo-gradient is sum_t delta~_t u~_t^T; the edit is W~ = W - alpha_l * pseudo-gradient with a
     learned per-weight step alpha_l (``edit_lr`` its start, ``lr_lr`` its learning rate).
Training (``train``) minimises cedit * NLL of the new target after the edit (prompt and rephrases)
+ cloc * KL(base || edited) on unrelated (locality) inputs, through the edit, with respect to g and alpha.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Mapping, Sequence

import torch
from torch import nn

from ..editing.tokens import model_device
from ..editing import batches, losses
from ..editing.hooks import frozen
from ..editing.result import tensor_aliases
from ..editing.update import apply_update
from ..errors import AdapterkitError
from . import described
from ..settings.methods import MENDSettings


# --- the editor network ---------------------------------------------------------------------------
class LowRankIdentityLayer(nn.Module):
    """x + relu(U V x + b), with U = 0 at init (so the identity), and an optional per-mode scale and shift."""

    def __init__(self, dim: int, rank: int, n_modes: int | None, init: str, activate: bool):
        super().__init__()
        mid = min(rank, dim)
        if init == "id":
            self.u = nn.Parameter(torch.zeros(dim, mid))
            self.v = nn.Parameter(torch.randn(mid, dim))
        else:  # xavier
            self.u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, mid), gain=nn.init.calculate_gain("relu")))
            self.v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(mid, dim)))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.mode_scale = nn.Embedding(n_modes, dim) if n_modes else None
        self.mode_shift = nn.Embedding(n_modes, dim) if n_modes else None
        if n_modes:
            nn.init.ones_(self.mode_scale.weight)
            nn.init.zeros_(self.mode_shift.weight)
        self.residual = init == "id"
        self.activate = activate

    def forward(self, x: torch.Tensor, mode: int | None = None) -> torch.Tensor:
        pre = x @ self.v.T @ self.u.T + self.bias
        if mode is not None and self.mode_scale is not None:
            index = torch.tensor(mode, device=x.device)
            pre = pre * self.mode_scale(index) + self.mode_shift(index)
        # clamp, not relu: at init pre == 0 exactly, and relu's gradient there is 0
        out = pre.clamp(min=0) if self.activate else pre
        return x + out if self.residual else out


class IdentityMLP(nn.Module):
    """MEND's IDMLP: n_hidden activated low-rank residual layers and a last linear one."""

    def __init__(self, dim: int, settings: MENDSettings, n_modes: int | None):
        super().__init__()
        n_hidden = settings.n_hidden
        self.layers = nn.ModuleList(LowRankIdentityLayer(dim, settings.rank, n_modes, settings.init, activate=i < n_hidden)
                                    for i in range(n_hidden + 1))

    def forward(self, x, mode=None):
        for layer in self.layers:
            x = layer(x, mode)
        return x


class RunningNorm(nn.Module):
    """Running mean and std of the rows seen while training (Chan et al.'s parallel update)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("m2", torch.zeros(dim))

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        if n == 0:
            return
        batch_mean = rows.mean(0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(0)
        total = self.count + n
        shift = batch_mean - self.mean
        self.mean += shift * n / total
        self.m2 += batch_m2 + shift ** 2 * self.count * n / total
        self.count.fill_(total)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.count < 2:
            raise AdapterkitError("MEND's input normalisation has seen fewer than two gradient rows",
                                  fix="train the editor (`adapterkit train`) before editing with it")
        std = (self.m2 / (self.count - 1)).sqrt()
        return (rows - self.mean) / (std + 1e-7)


class GradientTransform(nn.Module):
    """g: (u, delta) -> (u~, delta~) for all weights of one (x_dim, delta_dim) shape."""

    def __init__(self, x_dim: int, delta_dim: int, settings: MENDSettings, n_modes: int | None):
        super().__init__()
        if settings.combine and (settings.one_sided or settings.x_only or settings.delta_only):
            raise AdapterkitError("MEND hparams: combine cannot be used with one_sided, x_only or delta_only",
                                  fix="set combine: false, or turn the one-sided options off")
        self.x_dim, self.delta_dim, self.normalise = x_dim, delta_dim, settings.norm
        self.x_norm, self.delta_norm = RunningNorm(x_dim), RunningNorm(delta_dim)
        self.combine = settings.combine
        if self.combine:
            self.mlp = IdentityMLP(x_dim + delta_dim, settings, n_modes)
            return
        transform_x, transform_delta = True, True
        if settings.one_sided:
            transform_x, transform_delta = x_dim <= delta_dim, x_dim > delta_dim
        elif settings.x_only:
            transform_delta = False
        elif settings.delta_only:
            transform_x = False
        self.mlp_x = IdentityMLP(x_dim, settings, n_modes) if transform_x else None
        self.mlp_delta = IdentityMLP(delta_dim, settings, n_modes) if transform_delta else None

    def forward(self, x: torch.Tensor, delta: torch.Tensor, mode: int | None = None):
        if self.training:
            self.x_norm.update(x)
            self.delta_norm.update(delta)
        if self.normalise:
            x, delta = self.x_norm(x), self.delta_norm(delta)
        if self.combine:
            out = self.mlp(torch.cat((x, delta), -1), mode)
            return out.split([self.x_dim, self.delta_dim], -1)
        x = self.mlp_x(x, mode) if self.mlp_x is not None else x
        delta = self.mlp_delta(delta, mode) if self.mlp_delta is not None else delta
        return x, delta


def factor_dims(spec, shape: Sequence[int]) -> tuple[int, int]:
    """(input dim, output dim) of a weight stored in the declared layout."""
    out, in_ = spec.out_in_shape(shape)
    return in_, out


class MendEditor(nn.Module):
    """All gradient transforms (one per weight shape when ``shared``, else one per weight) and the edit steps."""

    def __init__(self, shapes: Mapping[str, Sequence[int]], spec, settings: MENDSettings):
        super().__init__()
        self.names = list(shapes)
        self.dims = {name: factor_dims(spec, shape) for name, shape in shapes.items()}
        self.shared = settings.shared
        by_dims = defaultdict(list)
        for name in self.names:
            by_dims[self.dims[name]].append(name)
        self.mode_of = {name: (group.index(name) if self.shared else None)
                        for group in by_dims.values() for name in group}
        if self.shared:
            self.transforms = nn.ModuleDict({self.key(dims): GradientTransform(*dims, settings, len(group))
                                             for dims, group in by_dims.items()})
        else:
            self.transforms = nn.ModuleDict({self.key(name): GradientTransform(*self.dims[name], settings, None)
                                             for name in self.names})
        self.edit_lrs = nn.Parameter(torch.full((len(self.names),), settings.edit_lr))

    @staticmethod
    def key(what) -> str:
        return "x".join(map(str, what)) if isinstance(what, tuple) else what.replace(".", "#")

    def transform_for(self, name: str) -> GradientTransform:
        return self.transforms[self.key(self.dims[name] if self.shared else name)]

    def pseudo_gradients(self, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """name -> sum_t delta~_t u~_t^T as [out, in], from the hooked factors of every token."""
        grads = {}
        for name in self.names:
            x, delta = factors[name]
            x, delta = x.reshape(-1, x.shape[-1]).float(), delta.reshape(-1, delta.shape[-1]).float()
            keep = (x != 0).any(-1) & (delta != 0).any(-1)  # tokens the loss does not reach carry no gradient
            x_t, delta_t = self.transform_for(name)(x[keep], delta[keep], self.mode_of[name])
            grads[name] = delta_t.T @ x_t
        return grads

    def updates(self, factors) -> dict[str, torch.Tensor]:
        """name -> the weight change as [out, in]: minus the learned step times the pseudo-gradient."""
        grads = self.pseudo_gradients(factors)
        return {name: -self.edit_lrs[i] * grads[name] for i, name in enumerate(self.names)}


# --- gradient factors -------------------------------------------------------------------------------
@contextlib.contextmanager
def capture_inputs(model, names: Sequence[str]):
    """Record each inner weight's module input (u) and output tensor while the block runs."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name.rsplit(".", 1)[0])

        def hook(mod, args, output, name=name):
            seen[name] = (args[0].detach(), output)
        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def edit_factors(model, tok, requests, names: Sequence[str], dims: Mapping[str, tuple[int, int]], device):
    """(u, delta) per inner weight for the NLL of each request's new target after its prompt."""
    ids, mask, labels = losses.target_labels(tok, [r.prompt for r in requests], [r.target_new for r in requests], device)
    weights = [model.get_parameter(n) for n in names]
    flags = [w.requires_grad for w in weights]
    for w in weights:  # the hooked outputs need a graph to differentiate; the weights' own grads are not kept
        w.requires_grad_(True)
    try:
        with torch.enable_grad(), capture_inputs(model, names) as seen:
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = losses.mean_nll(logits, labels)
            outputs = [seen[n][1] for n in names]
            deltas = torch.autograd.grad(loss, outputs)
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    factors = {}
    for name, delta in zip(names, deltas):
        x = seen[name][0]
        if (x.shape[-1], delta.shape[-1]) != dims[name]:
            raise AdapterkitError(
                f"{name}: the module takes inputs of width {x.shape[-1]} and gives {delta.shape[-1]}, but its weight "
                f"read in the declared layout means {dims[name]}",
                fix="check weight_layout in the architecture declaration ('linear' = [out, in], 'conv1d' = [in, out])")
        factors[name] = (x, delta.detach())
    return factors


# --- the method -------------------------------------------------------------------------------------
class MEND(described.MEND):
    # --- editing ----------------------------------------------------------------------------------
    def apply(self, model, tok, requests, settings: MENDSettings, *, spec, ledger, archive=None):
        editor = self.load_editor(archive or settings.archive, model, spec, settings)
        device = model_device(model)  # the embedding's: on a placed model, where the inputs go
        editor.to(device).eval()
        with frozen(model):
            factors = edit_factors(model, tok, requests, editor.names, editor.dims, device)
            with torch.no_grad():
                updates = editor.updates(factors)
        for name, update in updates.items():
            apply_update(ledger, spec, name, update.detach())
        return None

    def archive_shapes(self, model, settings: MENDSettings) -> dict[str, list[int]]:
        return inner_shapes(model, settings)

    def build_editor(self, model, spec, settings: MENDSettings, metadata) -> MendEditor:
        return MendEditor(inner_shapes(model, settings), spec, settings)

    # --- training ---------------------------------------------------------------------------------
    def make_task(self, model, tok, spec, settings: MENDSettings, device, train_set):
        return MendTask(model, tok, spec, settings, device, train_set)


def inner_shapes(model, settings: MENDSettings) -> dict[str, list[int]]:
    names = settings.inner_params
    if not names:
        raise AdapterkitError("MEND hparams: inner_params is empty",
                              fix="run `adapterkit detect MODEL --method mend` to fill it for this architecture")
    aliases = tensor_aliases(model)
    tied = sorted({n for n in names if n in aliases or n in aliases.values()})
    if tied:
        other = {n: aliases.get(n) or next(a for a, c in aliases.items() if c == n) for n in tied}
        raise AdapterkitError("MEND hparams: inner_params " + ", ".join(f"{n} (one tensor with {o})" for n, o in other.items())
                              + " name a tied weight: an update would change the embedding and the lm-head together",
                              fix="list MLP weights, as `adapterkit detect MODEL --method mend` writes them")
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise AdapterkitError(f"MEND hparams: inner_params {missing} are not weights of this model",
                              fix="run `adapterkit detect MODEL --method mend` to write inner_params for this model")
    bad = [n for n in names if params[n].dim() != 2]
    if bad:
        raise AdapterkitError(f"MEND hparams: inner_params {bad} are not 2-D weight matrices",
                              fix="list the .weight of linear (or Conv1D) layers only")
    return {n: list(params[n].shape) for n in names}


class MendTask:
    """What the shared trainer needs: the editor, its parameter groups, one training step, validation."""

    def __init__(self, model, tok, spec, settings: MENDSettings, device, train_set=()):
        self.model, self.tok, self.spec, self.settings, self.device = model, tok, spec, settings, device
        self.shapes = inner_shapes(model, settings)
        self.editor = MendEditor(self.shapes, spec, settings).to(device)
        self.answers = batches.answer_pool(train_set)
        self.unrelated_pool = list(train_set)
        self.warm_up_normalisation(train_set)

    def warm_up_normalisation(self, requests) -> None:
        """Fill the running mean / std from the first ``norm_warmup`` training edits before any update:
        statistics of a handful of rows make the first normalised factors, and so the first edits, explode."""
        self.editor.train()
        for request in list(requests)[: self.settings.norm_warmup]:
            factors = edit_factors(self.model, self.tok, [request], self.editor.names, self.editor.dims, self.device)
            for name in self.editor.names:
                x, delta = factors[name]
                x, delta = x.reshape(-1, x.shape[-1]).float(), delta.reshape(-1, delta.shape[-1]).float()
                keep = (x != 0).any(-1) & (delta != 0).any(-1)
                transform = self.editor.transform_for(name)
                transform.x_norm.update(x[keep])
                transform.delta_norm.update(delta[keep])

    def param_groups(self):
        nets = [p for n, p in self.editor.named_parameters() if n != "edit_lrs"]
        return [{"params": nets, "lr": self.settings.lr},
                {"params": [self.editor.edit_lrs], "lr": self.settings.lr_lr}]

    def archive_metadata(self) -> dict:
        return {"method": "MEND", "architecture": self.spec.name, "inner_params": self.shapes,
                "hparams": self.settings.to_dict()}

    # edited forward: the base model with W + update for the inner weights, differentiable in the update
    def edited_logits(self, updates, ids, mask):
        params = {name: self.model.get_parameter(name) + self.spec.as_stored(u).to(self.model.get_parameter(name).dtype)
                  for name, u in updates.items()}
        return torch.func.functional_call(self.model, params, args=(), kwargs={"input_ids": ids, "attention_mask": mask}).logits

    def base_logits(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask).logits

    def losses(self, requests):
        factors = edit_factors(self.model, self.tok, requests, self.editor.names, self.editor.dims, self.device)
        updates = self.editor.updates(factors)
        prompts = [(r.prompt, r.target_new) for r in requests] + \
                  [(p, r.target_new) for r in requests for p in r.rephrase_prompts]
        ids, mask, labels = losses.target_labels(self.tok, *zip(*prompts), self.device)
        l_edit = losses.mean_nll(self.edited_logits(updates, ids, mask), labels)
        local = [(p, a) for r in requests for p, a in zip(r.locality_prompts, r.locality_ground_truths or [""] * len(r.locality_prompts))]
        ids, mask, _ = losses.target_labels(self.tok, *zip(*local), self.device)
        with torch.no_grad():
            base = self.base_logits(ids, mask)
        l_loc = losses.kl_locality(base, self.edited_logits(updates, ids, mask), mask)
        total = self.settings.cedit * l_edit + self.settings.cloc * l_loc
        return total, l_edit, l_loc, updates

    def with_unrelated_locality(self, requests):
        return batches.with_unrelated_locality(requests, self.unrelated_pool, self.settings.loc_unrelated)

    def train_step(self, requests):
        requests = self.with_unrelated_locality(requests)
        if self.settings.random_targets:
            # an editor that could recall each training edit's target would learn nothing for new edits
            requests = batches.with_random_targets(requests, self.answers)
        total, l_edit, l_loc, _ = self.losses(requests)
        return total, {"loss/edit": l_edit.item(), "loss/loc": l_loc.item()}

    def validate(self, requests):
        requests = self.with_unrelated_locality(requests)
        with torch.no_grad():
            total, l_edit, l_loc, updates = self.losses(requests)
            quality = losses.edit_quality(self.base_logits, lambda i, m: self.edited_logits(updates, i, m),
                                            self.tok, requests, self.device)
        return {"loss/total_edit": total.item(), "loss/edit": l_edit.item(), "loss/loc": l_loc.item(), **quality}
