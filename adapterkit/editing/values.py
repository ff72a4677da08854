"""Target values: the hidden state that makes the model say ``target_new`` (ROME's v*, MEMIT's z, PMET's z pair).

A delta is added to the output of one or more modules at the subject's looked-up token in every
rewriting prompt (context template + prompt + target) and in the KL prompt (``{subject} is a``), and
optimised with Adam against: the target's negative log-likelihood, a KL term keeping the subject's
next-token distribution in the KL prompt, and a weight decay relative to the original value's norm;
after each step the delta is projected into a ball of ``clamp_norm_factor`` times that norm.

All requests of a call are optimised together (each with its own delta rows) in one padded batch
holding every context template and KL prompt; a request stops moving once its loss drops below
``STOP_LOSS``, as in ROME, and the loop ends when all have.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import weakref
from dataclasses import astuple, dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F

from ..checkpoints.placement import is_placed, module_device
from ..errors import AdapterkitError
from ..settings.methods import LocateThenEditSettings
from . import graphs, speedups
from .hooks import edit_output, run, trace
from .keys import at_positions, context_keys, context_mean, module_io
from .prefix import LookupSplit, split_at_lookup
from .progress import counter
from .replay import BlockReplay
from .tokens import (Batch, in_context, lookup_index, model_device, moved_together, pad_id, pad_rows, plain_prompts,
                     rounded_up, target_start, token_ids)

log = logging.getLogger(__name__)
STOP_LOSS = 5e-2
# A graphed step's token widths are padded up to these multiples, and its target-token count to a power of two
# (ROUND_LABELS at least), so that edits of similar length share one capture (graphs.py); pads are masked out or
# weigh nothing in the loss. Every step runs the stepped tokens through the model and only attends to the cached
# ones, so those are padded further.
ROUND_CACHED = 16
ROUND_STEPPED = 2
ROUND_LABELS = 32
KL_PROMPT = "{} is a"
STARTERS = ("The", "Therefore", "Because", "I", "You")
TOP_K = 5

_templates_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_head_cut_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_prefix_split_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# --- context templates ------------------------------------------------------------------------
def context_templates(model, tok, settings: LocateThenEditSettings) -> list[list[str]]:
    """Groups of templates with ``{}`` where the prompt goes; the first group is the bare prompt ``["{}"]``.

    ``context_templates`` in the settings gives a fixed list; otherwise short texts are sampled from the model
    (top-5, seeded) for each ``[length, count]`` in ``context_template_length_params``, once per model.
    """
    fixed = settings.context_templates
    if fixed is not None:
        rest = [t for t in fixed if t != "{}"]
        return [["{}"]] + ([rest] if rest else [])
    params = tuple(tuple(p) for p in settings.context_template_length_params)
    seed = settings.context_template_seed
    per_model = _templates_cache.setdefault(model, {})
    key = (id(tok), params, seed)
    if key not in per_model:
        generator = torch.Generator().manual_seed(seed)
        per_model[key] = [["{}"]] + [
            [text.replace("{", " ").replace("}", " ") + ". {}" for text in sample_texts(model, tok, length, count, generator)]
            for length, count in params if count > 0]
    return per_model[key]


@torch.no_grad()
def sample_texts(model, tok, length: int, count: int, generator: torch.Generator) -> list[str]:
    """``count`` texts of ``length`` tokens (prompt included) started from ROME's starter words."""
    per_starter = [count // len(STARTERS)] * len(STARTERS) if count >= len(STARTERS) else [1] * count
    rows = [token_ids(tok, s) for s, n in zip(STARTERS, per_starter) for _ in range(n)]
    texts = []
    for width in sorted({len(r) for r in rows}):  # equal-length starts need no padding
        ids = torch.tensor([r for r in rows if len(r) == width], device=model_device(model))
        while ids.shape[1] < length:
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
            top = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1)
            choice = torch.multinomial(top.values.softmax(-1).cpu(), 1, generator=generator).to(ids.device)
            ids = torch.cat([ids, top.indices.gather(1, choice)], dim=1)
        texts += [tok.decode(row, skip_special_tokens=True) for row in ids.tolist()]
    return texts


# --- the batch ----------------------------------------------------------------------------------
def target_ids(tok, prompt: str, target: str) -> list[int]:
    """Tokens of ``target`` as they follow ``prompt`` (tokenised together, as the metrics do)."""
    full = token_ids(tok, prompt + target)
    return full[target_start(token_ids(tok, prompt), full):]


INDEX_FIELDS = ("row_request", "first_rows", "kl_rows", "label_rows", "label_pos", "label_ids", "label_request", "label_weight")


@dataclass
class ValueBatch:
    """Per request: one row per context template (prompt + target but its last token), then its KL row."""
    batch: Batch
    row_request: torch.Tensor     # [rows] request of each row
    first_rows: torch.Tensor      # [R] each request's bare-prompt row (where the original value is read)
    kl_rows: torch.Tensor         # [R]
    label_rows: torch.Tensor      # [labels] row, position, token and request of every target token
    label_pos: torch.Tensor
    label_ids: torch.Tensor
    label_request: torch.Tensor
    label_weight: torch.Tensor    # [labels] 1 / (target length * contexts): each request's mean NLL per row

    def head_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, positions) whose logits the loss reads: every target token's, then each request's KL token."""
        return (torch.cat([self.label_rows, self.kl_rows]),
                torch.cat([self.label_pos, self.batch.lookup[self.kl_rows]]))

    def after_lookup(self, batch: Batch) -> "ValueBatch":
        """This batch with ``batch`` (``LookupSplit.stepped()``, looked-up token at 0) in place of its own."""
        shift = self.batch.lookup.to(self.label_pos.device)[self.label_rows]
        return replace(self, batch=batch, label_pos=self.label_pos - shift)

    def with_labels_padded(self, multiple: int) -> "ValueBatch":
        """The target tokens padded to a multiple of ``multiple`` with copies of the first, weighing nothing."""
        extra = rounded_up(len(self.label_rows), multiple) - len(self.label_rows)
        if extra == 0:
            return self
        more = lambda t: torch.cat([t, t[:1].expand(extra)])  # noqa: E731
        return replace(self, label_rows=more(self.label_rows), label_pos=more(self.label_pos),
                       label_ids=more(self.label_ids), label_request=more(self.label_request),
                       label_weight=torch.cat([self.label_weight, self.label_weight.new_zeros(extra)]))

    def tensors(self) -> list[torch.Tensor]:
        return self.batch.tensors() + [getattr(self, f) for f in INDEX_FIELDS]

    def to(self, device) -> "ValueBatch":
        batch = self.batch
        moved = moved_together([batch.input_ids, batch.attention_mask, batch.lookup, batch.position_ids]
                               + [getattr(self, f) for f in INDEX_FIELDS], device)
        return ValueBatch(replace(batch, input_ids=moved[0], attention_mask=moved[1], lookup=moved[2], position_ids=moved[3]),
                          *moved[4:])


def value_batch(tok, requests, templates: Sequence[str], fact_token: str) -> ValueBatch:
    rows, lookups, row_request, first_rows, kl_rows = [], [], [], [], []
    labels = []  # (row, position, token, request, weight)
    for r, request in enumerate(requests):
        target = target_ids(tok, request.prompt, request.target_new)
        first_rows.append(len(rows))
        for context in templates:
            prompt = in_context(request.prompt, request.subject, context)
            ids = token_ids(tok, prompt.text)
            lookups.append(lookup_index(tok, prompt, fact_token, ids))
            labels += [(len(rows), len(ids) - 1 + j, t, r, 1.0 / (len(target) * len(templates))) for j, t in enumerate(target)]
            rows.append(ids + target[:-1])
            row_request.append(r)
        kl = in_context(KL_PROMPT.format(request.subject), request.subject)
        kl_ids = token_ids(tok, kl.text)
        kl_rows.append(len(rows))
        lookups.append(lookup_index(tok, kl, fact_token, kl_ids))
        rows.append(kl_ids)
        row_request.append(r)
    long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    columns = list(zip(*labels))
    return ValueBatch(pad_rows(rows, lookups, pad_id(tok)), long(row_request), long(first_rows), long(kl_rows),
                      long(columns[0]), long(columns[1]), long(columns[2]), long(columns[3]),
                      torch.tensor(columns[4], dtype=torch.float32))


# --- the optimisation ---------------------------------------------------------------------------
@dataclass
class LossSettings:
    lr: float
    steps: int
    weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    nll_factor: float = 1.0

    @classmethod
    def from_settings(cls, settings: LocateThenEditSettings) -> "LossSettings":
        return cls(settings.v_lr, settings.v_num_grad_steps, settings.v_weight_decay, settings.clamp_norm_factor,
                   settings.kl_factor, settings.nll_loss_factor)


@dataclass(frozen=True)
class ModuleKeys:
    """One module on the unedited model at each request's subject: its input averaged over the context templates
    (ROME's k*, MEMIT's k), and its input and output at the bare prompt."""
    context_mean: torch.Tensor   # [R, d_in], float32
    prompt_input: torch.Tensor   # [R, d_in]
    prompt_output: torch.Tensor  # [R, d_out]


@dataclass(frozen=True)
class TargetValues:
    """What value optimisation found: each point's target value, and the keys of the module named by ``keys_of``."""
    values: dict[str, torch.Tensor]  # {point: [R, d]}: the original output at the subject plus the optimised delta
    keys: ModuleKeys | None = None


class ValueOptimiser(abc.ABC):
    """Target values for a call's requests; ``value_optimiser(model)`` picks the straightforward or the fast one, once
    per edit, and every step of that edit runs it."""

    keys_from_reference_forward: bool  # the keys are read in the forward that records the reference outputs

    def optimise(self, model, tok, requests, points: Sequence[str], templates: Sequence[Sequence[str]], fact_token: str,
                 settings: LossSettings, *, loss_module: tuple[str, str, str] | None = None, lm_head: str | None = None,
                 static_blocks: Sequence[str] = (), batch_size: int = 16, keys_of: str | None = None) -> TargetValues:
        """Each module's original output at the subject plus its optimised delta, and ``keys_of``'s keys.

        ``loss_module``: (layer module, ln_f module, lm_head module) to read logits below the top layer
        (``v_loss_layer``); None reads the model's own logits. ``lm_head``: the model's output projection; its
        input is cut to the positions the loss reads (see ``head_logits``). ``static_blocks``: decoder blocks below
        every point, whose outputs the deltas cannot change. Requests go through in chunks of ``batch_size``.
        ``keys_of``: a module whose keys (``ModuleKeys``) to return too, on the model before any delta.
        """
        flat = [c for group in templates for c in group]
        if loss_module is None and lm_head is not None:
            lm_head = lm_head if self._head_cut_is_exact(model, tok, requests[:1], flat, fact_token, lm_head) else None
        static_blocks = self._replayed(static_blocks)
        split = self._split_is_exact(model, tok, requests[:1], flat, fact_token, loss_module, lm_head)
        traced_keys = keys_of if self.keys_from_reference_forward else None
        chunks, found = [], []
        with counter(len(requests), desc="target values", unit="request", disable_below=batch_size + 1) as bar:
            for lo in range(0, len(requests), batch_size):
                chunk = _Chunk(model, tok, requests[lo: lo + batch_size], points, flat, fact_token, settings, loss_module,
                               lm_head, static_blocks, split, self._graphed(model_device(model)), traced_keys,
                               [len(group) for group in templates])
                self._run(chunk)
                # read now: a later chunk that replays this one's kept step overwrites its tensors
                found.append(chunk.values())
                chunks.append(chunk)
                bar.update(len(chunk.requests))
        keys = self._keys(model, tok, requests, templates, fact_token, keys_of, chunks) if keys_of is not None else None
        values = {p: torch.cat([f[p] for f in found]) for p in points}
        _refuse_non_finite(values, requests)
        return TargetValues(values, keys)

    @abc.abstractmethod
    def _head_cut_is_exact(self, model, tok, requests, templates, fact_token, lm_head) -> bool:
        """Whether the head may run on the loss positions only (``head_logits``)."""

    @abc.abstractmethod
    def _replayed(self, static_blocks: Sequence[str]) -> Sequence[str]:
        """The blocks whose recorded outputs the steps replay."""

    @abc.abstractmethod
    def _split_is_exact(self, model, tok, requests, templates, fact_token, loss_module, lm_head) -> bool:
        """Whether the steps run the tokens from the looked-up one on, attending to the cached ones (``prefix.py``)."""

    @abc.abstractmethod
    def _graphed(self, device) -> bool:
        """Whether the step is captured as a CUDA graph (``graphs.py``)."""

    @abc.abstractmethod
    def _run(self, chunk: "_Chunk") -> None:
        """Optimise ``chunk.deltas`` in place."""

    @abc.abstractmethod
    def _keys(self, model, tok, requests, templates, fact_token, module: str, chunks: Sequence["_Chunk"]) -> ModuleKeys:
        """``module``'s keys for ``requests``."""


class StraightforwardValues(ValueOptimiser):
    """ROME's compute_v as written: every step runs the whole rows through the whole model, then a host check of
    the losses, a backward and torch's Adam; the keys come from forwards of their own (compute_u)."""

    keys_from_reference_forward = False

    def _head_cut_is_exact(self, model, tok, requests, templates, fact_token, lm_head) -> bool:
        return _check_head_cut(model, tok, requests, templates, fact_token, lm_head)

    def _replayed(self, static_blocks):
        return ()

    def _split_is_exact(self, model, tok, requests, templates, fact_token, loss_module, lm_head) -> bool:
        return False

    def _graphed(self, device) -> bool:
        return False

    def _run(self, chunk: "_Chunk") -> None:
        """A forward, a host check of the losses, a backward, an Adam step."""
        optimiser = torch.optim.Adam(list(chunk.deltas.values()), lr=chunk.settings.lr)
        active = torch.ones(len(chunk.requests), dtype=torch.bool, device=chunk.device)
        for step in range(chunk.settings.steps):
            losses = chunk.forward()
            active = active & (losses.detach() >= STOP_LOSS).to(active.device)  # the head may sit on another device
            if step == chunk.settings.steps - 1 or not bool(active.any()):
                break
            optimiser.zero_grad()
            losses.sum().backward()
            before = {p: d.detach().clone() for p, d in chunk.deltas.items()}
            optimiser.step()
            with torch.no_grad():
                for p, delta in chunk.deltas.items():
                    moving = active.to(delta.device)[:, None]
                    delta.copy_(torch.where(moving, _clamped(delta, chunk.init[p], chunk.settings.clamp_norm_factor), before[p]))

    def _keys(self, model, tok, requests, templates, fact_token, module, chunks) -> ModuleKeys:
        prompt_input, prompt_output = module_io(model, tok, plain_prompts(requests), fact_token, module)
        return ModuleKeys(context_keys(model, tok, requests, templates, fact_token, module), prompt_input, prompt_output)


class FastValues(ValueOptimiser):
    """The same optimisation with the exact speed-ups (``speedups``): the blocks below the points replayed, the
    tokens before the looked-up one cached, the steps run without host synchronisation (and captured as a CUDA
    graph on a GPU), and the keys read from the forward that records the reference outputs."""

    keys_from_reference_forward = True

    def _head_cut_is_exact(self, model, tok, requests, templates, fact_token, lm_head) -> bool:
        return _head_cut_is_exact(model, tok, requests, templates, fact_token, lm_head)

    def _replayed(self, static_blocks):
        return static_blocks

    def _split_is_exact(self, model, tok, requests, templates, fact_token, loss_module, lm_head) -> bool:
        return _prefix_split_is_exact(model, tok, requests, templates, fact_token, loss_module, lm_head)

    def _graphed(self, device) -> bool:
        return graphs.can_capture(device)

    def _run(self, chunk: "_Chunk") -> None:
        settings, deltas, init, device = chunk.settings, chunk.deltas, chunk.init, chunk.device
        points = list(deltas)
        active = torch.ones(len(chunk.requests), dtype=torch.bool, device=device)
        moments = {p: (torch.zeros_like(init[p]), torch.zeros_like(init[p])) for p in points}
        count = torch.zeros((), dtype=torch.float64, device=device)

        def step() -> None:
            """One optimisation step of every request, with no host synchronisation: the ones whose loss is below
            STOP_LOSS keep their delta (as if they had stopped; the step before stopping is exactly that)."""
            for delta in deltas.values():
                delta.grad = None  # the backward (or its captured graph) writes fresh gradients
            losses = chunk.forward()
            losses.sum().backward()
            with torch.no_grad():
                active.logical_and_(losses.detach() >= STOP_LOSS)
                count.add_(1)
                for p, delta in deltas.items():
                    moved = _adam_step(delta, delta.grad, *moments[p], count, settings.lr)
                    delta.copy_(torch.where(active[:, None], _clamped(moved, init[p], settings.clamp_norm_factor), delta))

        state = (chunk.vb.tensors() + chunk.replay.tensors() + [chunk.reference] + [init[p] for p in points]
                 + [deltas[p] for p in points] + [m for p in points for m in moments[p]] + [count, active])
        run_step = step
        if chunk.graphed:
            signature = ("values", tuple(points), chunk.loss_module, chunk.lm_head, tuple(chunk.replay.blocks),
                         astuple(settings), STOP_LOSS, tuple((tuple(t.shape), t.dtype) for t in state),
                         graphs.weights_signature(chunk.model))
            run_step = graphs.ReplayedStep(step, state, model=chunk.model, signature=signature)
            active = run_step.current(active)
            chunk.deltas = {p: run_step.current(d) for p, d in deltas.items()}
        # The loss of the last of ``steps`` forwards only decides whether to stop: steps - 1 updates are made.
        _step_until_settled(run_step, settings.steps - 1, active)

    def _keys(self, model, tok, requests, templates, fact_token, module, chunks) -> ModuleKeys:
        return ModuleKeys(*(torch.cat(parts) for parts in zip(*(c.keys for c in chunks))))


def _refuse_non_finite(values: dict[str, torch.Tensor], requests) -> None:
    """A NaN or inf target value would become a NaN weight: name the first request that got one."""
    for point, rows in values.items():
        bad = (~torch.isfinite(rows)).any(dim=-1).nonzero()[:, 0].tolist()
        if bad:
            request = requests[bad[0]]
            raise AdapterkitError(
                f"{getattr(request, 'origin', None) or 'request'} ({request.prompt!r} -> {request.target_new.strip()!r}): "
                f"its target value at {point} is not finite (NaN or inf)"
                + (f", as are those of {len(bad) - 1} more request(s)" if len(bad) > 1 else "") + "; the edit stopped there",
                fix="check the value-optimisation hyperparameters (v_lr, v_weight_decay, clamp_norm_factor, "
                    "kl_factor: finite and of ordinary size), and edit a float32 copy of a 16-bit model")


def value_optimiser(model) -> ValueOptimiser:
    """The optimiser for one edit of ``model``: ``FastValues``, or ``StraightforwardValues`` inside
    ``speedups.enabled(False)`` and for a model accelerate placed over several devices or offloaded (its steps
    cross devices and load weights, which a captured or replayed step cannot). Decided once per edit, here."""
    if not speedups.active() or is_placed(model):
        return StraightforwardValues()
    return FastValues()


def optimise_values(model, tok, requests, points: Sequence[str], templates: Sequence[Sequence[str]], fact_token: str,
                    settings: LossSettings, **options) -> dict[str, torch.Tensor]:
    """``value_optimiser(model).optimise(...).values``: target values ``{point: [R, d]}`` where no keys are wanted."""
    return value_optimiser(model).optimise(model, tok, requests, points, templates, fact_token, settings, **options).values


class _Chunk:
    """One chunk of requests ready to optimise: the batch, the reference outputs, the original values, the deltas
    (zero) and ``forward()``, the losses [R] of a forward with the deltas added. One forward of the whole rows gives
    the reference outputs, the blocks' outputs to replay, the original values, ``keys_of``'s keys and (for a split)
    the keys and values of the tokens before the looked-up one."""

    def __init__(self, model, tok, requests, points, templates, fact_token, settings: LossSettings, loss_module,
                 lm_head, static_blocks, split: bool, graphed: bool, keys_of: str | None, group_sizes: Sequence[int]):
        self.model, self.requests, self.settings = model, requests, settings
        self.loss_module, self.lm_head, self.graphed = loss_module, lm_head, graphed
        self.device = device = model_device(model)
        vb = value_batch(tok, requests, templates, fact_token)
        vb = vb.with_labels_padded(max(ROUND_LABELS, 1 << (len(vb.label_rows) - 1).bit_length())) if graphed else vb
        # Padding the stepped tokens costs every row its pads at every step: one request's rows pay a few per cent to
        # share captures, a batch's would pay more than a capture costs (and its widest row varies little).
        round_to = (ROUND_CACHED, ROUND_STEPPED if len(requests) == 1 else 1) if graphed else (1, 1)
        cut = LookupSplit(model, vb.batch, pad_id(tok), round_to) if split and not any(vb.batch.offsets) else None
        whole = replace(vb, batch=cut.whole if cut else vb.batch.widened(round_to[1], pad_id(tok))).to(device)
        self.replay = BlockReplay(model, static_blocks)
        looked_at = [keys_of] if keys_of is not None else []
        with torch.no_grad(), trace(model, inputs=looked_at, outputs=[*points, *looked_at], copy=True) as record, \
                self.replay.recording():
            self.reference = _kl_log_probs(head_logits(model, whole, loss_module, lm_head), whole)
        self.init = {p: at_positions(record.outputs[p], whole.first_rows, whole.batch.lookup[whole.first_rows]).float()
                     for p in points}
        self.keys = None if keys_of is None else _keys_seen(record, keys_of, whole, group_sizes)
        if cut is None:
            self.vb = whole
        else:
            self.replay.map_outputs(cut.to_stepped)
            self.vb = whole.after_lookup(cut.stepped()).to(device)
        self.deltas = {p: torch.zeros_like(self.init[p], requires_grad=True) for p in points}

    def forward(self) -> torch.Tensor:
        vb, deltas = self.vb, self.deltas
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.replay.replaying())
            for p in deltas:
                stack.enter_context(edit_output(self.model, p, _adder(deltas[p], vb, vb.batch.lookup)))
            logits = head_logits(self.model, vb, self.loss_module, self.lm_head)
        return _request_losses(logits, vb, self.reference, deltas, self.init, self.settings)

    def values(self) -> dict[str, torch.Tensor]:
        return {p: (self.init[p] + self.deltas[p]).detach() for p in self.deltas}


def _keys_seen(record, module: str, whole: ValueBatch, group_sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """``ModuleKeys``' fields from a traced forward of ``whole``: each row's input and output of ``module`` at its
    looked-up token; a request's rows are its context rows, then its KL row."""
    every_row = torch.arange(len(whole.batch.lookup), device=whole.batch.lookup.device)
    inputs, outputs = (at_positions(seen[module], every_row, whole.batch.lookup) for seen in (record.inputs, record.outputs))
    contexts = sum(group_sizes)
    per_request = inputs.reshape(len(whole.first_rows), contexts + 1, -1)[:, :contexts]
    first = whole.first_rows.to(inputs.device)
    return (context_mean(per_request.reshape(-1, inputs.shape[-1]).float(), group_sizes), inputs[first], outputs[first])


def _adam_step(param, grad, exp_avg, exp_avg_sq, count, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """``param`` after one step of torch.optim.Adam's update (its defaults, the same arithmetic), with the step count
    a float64 device tensor so that the step can be captured; updates the moments in place."""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = (-lr / (1 - torch.pow(beta1, count))).to(param.dtype)
    denominator = (exp_avg_sq.sqrt() / (1 - torch.pow(beta2, count)).sqrt().to(param.dtype)).add_(eps)
    return torch.addcdiv(param, exp_avg * step_size, denominator)


def _step_until_settled(run_step, steps: int, active: torch.Tensor) -> None:
    """``steps`` calls of ``run_step``, ended early once no request is active. On a GPU each step's answer is read
    while the next step runs, so the host never waits for the step it has just launched: the one step run after
    the last request stopped changes nothing."""
    if steps <= 0:
        return
    if active.device.type != "cuda":
        for _ in range(steps):
            run_step()
            if not bool(active.any()):
                return
        return
    flags = torch.empty(steps, dtype=torch.bool, pin_memory=True)
    pending = None
    for index in range(steps):
        run_step()
        flags[index].copy_(active.any(), non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        if pending is not None:
            pending[1].synchronize()
            if not bool(flags[pending[0]]):
                return
        pending = (index, done)


def _adder(delta: torch.Tensor, vb: ValueBatch, lookup: torch.Tensor):
    """Adds each row's request delta at the row's looked-up token."""
    def add(output: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(lookup), device=output.device)
        per_row = delta[vb.row_request.to(delta.device)].to(output.device, output.dtype)
        return output.index_put((rows, lookup.to(output.device)), per_row, accumulate=True)
    return add


def head_logits(model, vb: ValueBatch, loss_module, lm_head: str | None) -> torch.Tensor:
    """[target tokens + requests, vocab]: the logits at ``vb.head_positions()``, float32.

    The batch holds every context template of every request, but the loss reads a few positions per row;
    full-vocabulary logits for all of them cost rows x tokens x vocabulary floats, kept for the backward
    pass. So the head runs on the wanted positions only: after ``ln_f`` below the top (``loss_module``), or
    through ``lm_head``'s input where the caller checked that this reproduces the model's logits; otherwise
    the model's own logits are cut afterwards.
    """
    rows, positions = vb.head_positions()
    if loss_module is not None:
        layer, ln_f, head = loss_module
        with trace(model, outputs=[layer], stop=True) as record:
            run(model, vb.batch)
        hidden = at_positions(record.outputs[layer], rows, positions)
        ln_f, head = model.get_submodule(ln_f), model.get_submodule(head)
        # called outside the model's forward: on a placed model, to the device each runs on
        normed = ln_f(_to_module(hidden, ln_f))
        return head(_to_module(normed, head)).float()
    if lm_head is None:
        return at_positions(run(model, vb.batch), rows, positions).float()
    cut = lambda module, args: (at_positions(args[0], rows, positions)[None], *args[1:])  # noqa: E731
    handle = model.get_submodule(lm_head).register_forward_pre_hook(cut)
    try:
        return run(model, vb.batch)[0].float()
    finally:
        handle.remove()


@torch.no_grad()
def _head_cut_is_exact(model, tok, requests, templates, fact_token, lm_head: str) -> bool:
    """Whether cutting ``lm_head``'s input gives the model's own logits (checked on one request's rows), up to
    the rounding of the weights' dtype: a model whose head is not a per-position function of that input
    keeps full logits. The answer is a property of the model's structure, kept per model and head."""
    return _per_model(_head_cut_cache, model, (lm_head, id(tok)),
                      lambda: _check_head_cut(model, tok, requests, templates, fact_token, lm_head))


def _per_model(cache: "weakref.WeakKeyDictionary", model, key, check):
    """``check()``, run once per model and key: the answer is a property of the model's structure."""
    known = cache.setdefault(model, {})
    if key not in known:
        known[key] = check()
    return known[key]


@torch.no_grad()
def _check_head_cut(model, tok, requests, templates, fact_token, lm_head: str) -> bool:
    vb = value_batch(tok, requests, templates, fact_token).to(model_device(model))
    cut, full = head_logits(model, vb, None, lm_head), head_logits(model, vb, None, None)
    tol = 1e-4 if next(model.parameters()).dtype == torch.float32 else 1e-2
    return cut.shape == full.shape and torch.allclose(cut, full, rtol=tol, atol=tol * float(full.abs().max()))


@torch.no_grad()
def _prefix_split_is_exact(model, tok, requests, templates, fact_token, loss_module, lm_head) -> bool:
    """Whether the rows split at the looked-up token (``prefix.py``) give the logits of the whole rows, checked on
    one request's rows as ``_head_cut_is_exact`` is, and kept per model."""
    return _per_model(_prefix_split_cache, model, (id(tok), loss_module, lm_head),
                      lambda: _check_prefix_split(model, tok, requests, templates, fact_token, loss_module, lm_head))


@torch.no_grad()
def _check_prefix_split(model, tok, requests, templates, fact_token, loss_module, lm_head) -> bool:
    whole = value_batch(tok, requests, templates, fact_token)
    try:
        tail = split_at_lookup(model, whole.batch, pad_id(tok))
        if tail is None:
            return False
        split = head_logits(model, whole.after_lookup(tail).to(model_device(model)), loss_module, lm_head)
    except Exception as exc:  # noqa: BLE001  (a model that cannot continue a cache fails in its own way; rows stay whole)
        log.debug("value optimisation keeps whole rows: %s cannot continue an attention cache (%s)", type(model).__name__, exc)
        return False
    full = head_logits(model, whole.to(model_device(model)), loss_module, lm_head)
    if split.shape != full.shape:
        return False
    if next(model.parameters()).dtype == torch.float32:
        return torch.allclose(split, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()))
    # In 16 bits the cached and the whole rows round differently (other attention kernels): the logits of a 7B
    # model in bf16 differ by a few hundredths of their spread, where a mistaken position or mask moves them by
    # about the spread itself (benchmarks/RESULTS.md).
    spread, difference = float(full.std()), (split - full).abs()
    return float(difference.mean()) <= 0.1 * spread and float(difference.max()) <= 0.5 * spread


def _to_module(tensor: torch.Tensor, module) -> torch.Tensor:
    device = module_device(module)
    return tensor if device is None or device == tensor.device else tensor.to(device)


def _kl_log_probs(logits: torch.Tensor, vb: ValueBatch) -> torch.Tensor:
    return F.log_softmax(logits[len(vb.label_rows):], dim=-1)


def _request_losses(logits, vb: ValueBatch, reference, deltas, init, settings: LossSettings) -> torch.Tensor:
    """[R]: NLL of the target over the rewriting rows + kl_factor * KL(now || before) + weight decay."""
    device = logits.device
    log_probs = F.log_softmax(logits[: len(vb.label_rows)], dim=-1)
    token_nll = -log_probs.gather(1, vb.label_ids.to(device)[:, None])[:, 0] * vb.label_weight.to(device)
    nll = torch.zeros(len(vb.first_rows), device=device).index_add(0, vb.label_request.to(device), token_nll)
    now = _kl_log_probs(logits, vb)
    kl = (now.exp() * (now - reference)).sum(-1)
    decay = sum((deltas[p].norm(dim=-1) / init[p].norm(dim=-1).clamp_min(1e-8) ** 2).to(device) for p in deltas)
    return settings.nll_factor * nll + settings.kl_factor * kl + settings.weight_decay * decay


def _clamped(delta: torch.Tensor, init: torch.Tensor, factor: float) -> torch.Tensor:
    limit = factor * init.norm(dim=-1, keepdim=True)
    return delta * (limit / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


def loss_module(settings: LocateThenEditSettings, num_layers: int, edit_layer: int) -> tuple[str, str, str] | None:
    """Where the loss reads logits: the model's own (None) unless ``v_loss_layer`` is below the top layer."""
    layer = settings.v_loss_layer
    if layer is None or max(layer, edit_layer) >= num_layers - 1:
        return None
    return settings.layer_module_tmp.format(max(layer, edit_layer)), settings.ln_f_module, settings.lm_head_module


def value_options(settings: LocateThenEditSettings, num_layers: int, edit_layer: int) -> dict:
    """``ValueOptimiser.optimise``'s keywords for values at ``edit_layer``: where and how the loss reads logits
    (``loss_module``, ``lm_head``) and the blocks below that layer (``static_blocks``)."""
    return {"loss_module": loss_module(settings, num_layers, edit_layer), "lm_head": settings.lm_head_module,
            "static_blocks": [settings.layer_module_tmp.format(layer) for layer in range(edit_layer)]}
