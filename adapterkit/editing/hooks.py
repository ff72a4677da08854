"""Looking into a forward pass (ROME's nethook): record what named modules take and give, replace an
output, stop the pass once everything wanted is recorded, and freeze a model's weights while editing."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from ..errors import AdapterkitError


class _StopForward(Exception):
    """Raised from a hook once everything wanted from a forward pass has been recorded."""


def first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    raise AdapterkitError(f"a hooked module returned {type(value).__name__}, not a tensor",
                          fix="point the hparams template at a module whose output is a hidden-state tensor")


def _replace_first_tensor(value, new):
    if isinstance(value, torch.Tensor):
        return new
    items = list(value)
    index = next(i for i, item in enumerate(items) if isinstance(item, torch.Tensor))
    items[index] = new
    return tuple(items) if isinstance(value, tuple) else items


@dataclass
class Record:
    inputs: dict
    outputs: dict


def _batch_shape_hook(shape: list):
    """A model pre-hook keeping the (batch, tokens) shape of the forward's input ids in ``shape``."""
    def fn(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape[:] = list(ids.shape[:2]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else []
    return fn


def batch_major(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """[batch, tokens, d]: some blocks run their MLP on the tokens flattened to [batch * tokens, d]."""
    if tensor.dim() == 2 and len(shape) == 2 and tensor.shape[0] == shape[0] * shape[1]:
        return tensor.view(shape[0], shape[1], tensor.shape[-1])
    return tensor


@contextlib.contextmanager
def trace(model, inputs: Iterable[str] = (), outputs: Iterable[str] = (), stop: bool = False, copy: bool = False):
    """Record the input (first tensor argument) and output (first tensor) of named modules in one forward.

    With ``stop=True`` the forward pass ends as soon as every named module has run; ``run`` swallows that.
    ``copy=True`` records copies: a forward that goes on may change a recorded tensor in place (a block with
    parallel attention may add the attention output into its MLP's output).
    """
    inputs, outputs = list(inputs), list(outputs)
    record = Record({}, {})
    wanted = set(inputs) | set(outputs)
    fired: set[str] = set()  # modules seen in the current forward pass
    shape: list = []
    kept = (lambda t: t.detach().clone()) if copy else (lambda t: t)  # noqa: E731
    handles = [model.register_forward_pre_hook(lambda *args: fired.clear()),
               model.register_forward_pre_hook(_batch_shape_hook(shape), with_kwargs=True)]

    def hook(name):
        def fn(module, args, kwargs, output):
            if name in inputs:
                record.inputs[name] = kept(batch_major(first_tensor(list(args) + list(kwargs.values())), shape))
            if name in outputs:
                record.outputs[name] = kept(batch_major(first_tensor(output), shape))
            fired.add(name)
            if stop and fired >= wanted:
                raise _StopForward
        return fn

    try:
        for name in wanted:
            handles.append(model.get_submodule(name).register_forward_hook(hook(name), with_kwargs=True))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def run(model, batch) -> torch.Tensor | None:
    """Forward ``batch`` (a tokens.Batch); returns logits, or None when a ``trace(stop=True)`` ended the pass early."""
    try:
        return model(**{"use_cache": False, **batch.inputs()}).logits
    except _StopForward:
        return None


@contextlib.contextmanager
def edit_output(model, name: str, edit: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the output (its first tensor) of module ``name`` by ``edit(output)`` during forwards.

    ``edit`` sees [batch, tokens, d] also where the module runs on flattened tokens."""
    shape: list = []

    def fn(module, args, output):
        out = first_tensor(output)
        return _replace_first_tensor(output, edit(batch_major(out, shape)).reshape(out.shape))

    handles = [model.register_forward_pre_hook(_batch_shape_hook(shape), with_kwargs=True),
               model.get_submodule(name).register_forward_hook(fn)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def frozen(model):
    """Evaluation mode and no weight gradients while editing; the model's own settings come back after."""
    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)
