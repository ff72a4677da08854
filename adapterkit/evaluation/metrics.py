"""Metric functions, each named by how it measures.

Teacher-forced token accuracy is EasyEdit's (``adapterkit.editing.metrics``); here are the others:

- ``target_nll``: the mean negative log-probability of a target's tokens after a prompt (teacher-forced), which
  ROME and MEMIT compare between the new and the true target (efficacy, paraphrase and neighbourhood scores);
- ``exact_match`` / ``starts_with``: a generated answer against an expected one, as normalised text;
- ``ngram_entropy``: ROME's fluency measure of a generated text;
- ``perplexity``: of held-out texts, the token-weighted exp(mean NLL).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Sequence

import torch

from ..editing.metrics import teacher_forced
from ..editing.tokens import model_device, pad_id, padded, token_ids


# --- answers as text ------------------------------------------------------------------------------
def normalise_answer(text: str) -> str:
    """Case-folded, punctuation removed, whitespace collapsed and stripped: "  Rome, Italy." -> "rome italy"."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.casefold())
    return " ".join(kept.split())


def exact_match(answer: str, expected: str) -> bool:
    """The normalised answer is the normalised expected text."""
    return normalise_answer(answer) == normalise_answer(expected)


def starts_with(answer: str, expected: str) -> bool:
    """The normalised answer begins with the normalised expected text, as whole words ("rome" does not begin
    "romania")."""
    answer, expected = normalise_answer(answer), normalise_answer(expected)
    return bool(expected) and (answer == expected or answer.startswith(expected + " "))


# --- fluency --------------------------------------------------------------------------------------
WORD = re.compile(r"\w+|[^\w\s]")
NGRAM_WEIGHTS = {2: 2 / 3, 3: 4 / 3}  # ROME's compute_n_gram_entropy


def ngram_entropy(text: str) -> float:
    """ROME's fluency (Meng et al. 2022, ``compute_n_gram_entropy``): the mean over n = 2, 3 of weight_n times the
    entropy in bits of the text's n-gram frequencies, weights 2/3 and 4/3. Words are ``\\w+`` runs and single
    punctuation marks (ROME uses NLTK's word_tokenize, which splits much the same); a text too short for any
    n-gram of a size adds 0 for it."""
    words = WORD.findall(text)
    total = 0.0
    for n, weight in NGRAM_WEIGHTS.items():
        counts = Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))
        seen = sum(counts.values())
        entropy = -sum(c / seen * math.log2(c / seen) for c in counts.values()) if seen else 0.0
        total += weight * entropy
    return total / len(NGRAM_WEIGHTS)


# --- teacher-forced probabilities -----------------------------------------------------------------
def target_nll(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 64) -> list[float]:
    """Per (prompt, target): the mean negative log-probability of the target's tokens after the prompt."""
    pairs = list(zip(prompts, targets))
    scored = teacher_forced(model, tok, pairs, batch_size)
    return [scored[pair].nll for pair in pairs]


def token_batches(rows: Sequence[list[int]], max_tokens: int, max_rows: int):
    """Consecutive groups of ``rows`` whose padded size (rows x the longest) stays within ``max_tokens`` (a row
    longer than that alone), at most ``max_rows`` each."""
    batch: list[list[int]] = []
    for ids in rows:
        width = max([len(ids)] + [len(r) for r in batch])
        if batch and (width * (len(batch) + 1) > max_tokens or len(batch) == max_rows):
            yield batch
            batch = []
        batch.append(ids)
    if batch:
        yield batch


@torch.no_grad()
def perplexity(model, tok, texts: Sequence[str], batch_size: int = 64, max_tokens: int = 4096) -> float:
    """exp of the mean negative log-likelihood over every predicted token of ``texts`` (each text's first token is
    given, not predicted). Texts are read ``batch_size`` at a time, fewer where their padded tokens would pass
    ``max_tokens`` (the float32 logits of a forward are tokens x vocabulary)."""
    device = model_device(model)
    total_nll, total_tokens = 0.0, 0
    rows = [ids for ids in (token_ids(tok, t) for t in texts) if len(ids) > 1]
    for batch in token_batches(rows, max_tokens, batch_size):
        ids, mask, _ = padded(batch, pad_id(tok))
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                                reduction="none")
        predicted = mask[:, 1:].flatten().bool()
        total_nll += nll[predicted].sum().item()
        total_tokens += int(predicted.sum())
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")
