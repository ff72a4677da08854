"""Prompts in the tokenizer's chat template: the prompt is the user's turn, the generation prompt opens the
assistant's turn, and the answer continues it.

The answer starts the assistant's turn, after the template's line break, so in chat form answers lose the one
leading space that plain prompts put before them (" Rome" after "... is in" becomes "Rome" after the turn opens).
The same wrapped requests are edited and measured.
"""
from __future__ import annotations

import dataclasses

from ..errors import AdapterkitError
from ..requests import EditRequest, Probe, ProbeGroup


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def require_chat_template(tok, model_path) -> None:
    if not has_chat_template(tok):
        raise AdapterkitError(
            f"{model_path}: --chat needs the tokenizer's chat template, and this tokenizer has none "
            f"({type(tok).__name__}; no chat_template in its tokenizer_config.json or GGUF metadata)",
            fix="run without --chat, or evaluate an instruction-tuned checkpoint whose tokenizer ships a chat template")


def wrap_prompt(tok, prompt: str) -> str:
    """``prompt`` as a user turn followed by the opening of the assistant's turn, as text. A beginning-of-sequence
    token the template writes is dropped where the tokenizer adds one itself, so it is not there twice."""
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    bos = getattr(tok, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tok):
        text = text[len(bos):]
    return text


def _adds_bos(tok) -> bool:
    ids = tok("x")["input_ids"]
    return bool(ids) and ids[0] == tok.bos_token_id


def chat_answer(answer: str | None) -> str | None:
    return None if answer is None else answer.lstrip(" ")


def wrap_request(tok, request: EditRequest) -> EditRequest:
    """Every prompt of ``request`` in the chat template, every answer without its leading space."""
    wrap = lambda prompt: wrap_prompt(tok, prompt)  # noqa: E731
    groups = lambda groups: tuple(ProbeGroup(g.name, tuple(Probe(wrap(p.prompt), chat_answer(p.answer), p.aliases)  # noqa: E731
                                                           for p in g.probes)) for g in groups)
    return dataclasses.replace(
        request, prompt=wrap(request.prompt), target_new=chat_answer(request.target_new),
        ground_truth=chat_answer(request.ground_truth),
        rephrase_prompts=tuple(map(wrap, request.rephrase_prompts)),
        locality_prompts=tuple(map(wrap, request.locality_prompts)),
        locality_ground_truths=tuple(map(chat_answer, request.locality_ground_truths)),
        portability=groups(request.portability), locality_groups=groups(request.locality_groups))
