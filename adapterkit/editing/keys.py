"""What a module sees (its input: the key) and says (its output) at each prompt's looked-up token.

ROME's u and MEMIT's k are the rewrite module's input at the subject's token (tokens.py finds it),
averaged over context templates; the forward stops right after the module (hooks.py).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .hooks import run, trace
from .tokens import Prompt, encode, in_context, model_device


# --- keys and values at the looked-up token ----------------------------------------------------
@torch.no_grad()
def module_io(model, tok, prompts: Sequence[Prompt], fact_token: str, module: str, *,
              want: str = "both", batch_size: int = 64) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input and/or output of ``module`` at each prompt's looked-up token: ([N, d_in], [N, d_out]).

    The forward stops right after ``module``; rows go through in batches of ``batch_size``.
    """
    ins, outs = [], []
    for lo in range(0, len(prompts), batch_size):
        batch = encode(tok, prompts[lo: lo + batch_size], fact_token).to(model_device(model))
        rows = torch.arange(len(batch.lookup))
        with trace(model, inputs=[module] if want != "output" else [],
                   outputs=[module] if want != "input" else [], stop=True) as record:
            run(model, batch)
        if want != "output":
            ins.append(at_positions(record.inputs[module], rows, batch.lookup))
        if want != "input":
            outs.append(at_positions(record.outputs[module], rows, batch.lookup))
    return (torch.cat(ins) if ins else None), (torch.cat(outs) if outs else None)


def at_positions(tensor: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``tensor[rows, positions]`` on ``tensor``'s device."""
    return tensor[rows.to(tensor.device), positions.to(tensor.device)]


def context_mean(values: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """[R * C, d] rows (request-major, C contexts in groups) -> [R, d]: mean within each group, then over groups."""
    per_request = sum(group_sizes)
    values = values.reshape(-1, per_request, values.shape[-1])
    means, start = [], 0
    for size in group_sizes:
        means.append(values[:, start: start + size].mean(1))
        start += size
    return torch.stack(means, 1).mean(1)


def context_keys(model, tok, requests, templates: Sequence[Sequence[str]], fact_token: str, module: str,
                 batch_size: int = 64) -> torch.Tensor:
    """Each request's key at ``module``: its input at the subject, averaged over the context templates (ROME's u, MEMIT's k).

    Requests go through in chunks so that thousands of them never hold every context's key at once.
    """
    per_request = sum(len(g) for g in templates)
    step = max(1, batch_size * 4 // per_request)
    means = []
    for lo in range(0, len(requests), step):
        prompts = [in_context(r.prompt, r.subject, c) for r in requests[lo: lo + step] for group in templates for c in group]
        keys, _ = module_io(model, tok, prompts, fact_token, module, want="input", batch_size=batch_size)
        means.append(context_mean(keys.float(), [len(g) for g in templates]))
    return torch.cat(means)
