"""The facts a fact model learns, and the training pieces both recipes (plain, subject_recall) share.

The data are the shipped CounterFact and zsRE subsets (adapterkit/demo/data/NOTICE.md says how they were
chosen); a fact is a (prompt, " answer") pair, trained with the loss on the answer tokens and the
end-of-sequence token.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

import torch

from ..editing.tokens import padded
from ..errors import AdapterkitError

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


# --- data -----------------------------------------------------------------------------------------
def _sample(name: str) -> list[dict]:
    return json.loads(resources.files("adapterkit.demo.data").joinpath(name).read_text(encoding="utf-8"))


def counterfact_sample() -> list[dict]:
    """The shipped CounterFact records (see adapterkit/demo/data/NOTICE.md for how they were chosen)."""
    return _sample("counterfact_sample.json")


def zsre_sample() -> list[dict]:
    """The shipped zsRE records, in MEND's format (src, rephrase, alt, answers, loc, loc_ans)."""
    return _sample("zsre_sample.json")


@dataclass(frozen=True)
class FactSet:
    """The CounterFact sample split into the facts a model is trained on and the ones it never saw.

    The sample is ordered so that its first 40 records already hold every ``target_new`` of the sample
    as a ground truth: with ``n_facts >= 40`` each edit target is a word the model answers elsewhere.
    """
    trained: tuple[dict, ...]
    held_out: tuple[dict, ...]

    @classmethod
    def from_sample(cls, n_facts: int) -> "FactSet":
        records = counterfact_sample()
        if not 0 < n_facts <= len(records):
            raise AdapterkitError(f"n_facts={n_facts} is outside the sample's 1..{len(records)} records",
                                  fix=f"pass n_facts between 1 and {len(records)}")
        return cls(tuple(records[:n_facts]), tuple(records[n_facts:]))

    @property
    def all(self) -> tuple[dict, ...]:
        return self.trained + self.held_out

    def answers(self) -> set[str]:
        """Every answer the trained model gives somewhere (ground truths and locality ground truths)."""
        return {r[k] for r in self.trained for k in ("ground_truth", "locality_ground_truth")}


def fact_pairs(records: Iterable[dict]) -> list[tuple[str, str]]:
    """(prompt, " answer") for every fact of every record: the prompt, its rephrase and the locality prompt."""
    pairs = []
    for r in records:
        pairs += [(r["prompt"], " " + r["ground_truth"]), (r["rephrase_prompt"], " " + r["ground_truth"]),
                  (r["locality_prompt"], " " + r["locality_ground_truth"])]
    return pairs


def fact_corpus(records: Iterable[dict], eos_token: str = EOS) -> list[str]:
    """The training sequences as text, each ending with the end-of-sequence token."""
    return [prompt + answer + eos_token for prompt, answer in fact_pairs(records)]


def record_texts(records: Iterable[dict]) -> list[str]:
    """Every text of the records a tokenizer must cover, edit targets included."""
    keys = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
            "locality_ground_truth")
    return [r[k] for r in records for k in keys if r.get(k)]



# --- training pieces both recipes use ------------------------------------------------------------
def padded_answers(rows: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded ids, attention mask, and labels (-100 except on the answer tokens) of (prompt, answer) ids."""
    ids, mask, _ = padded([prompt + answer for prompt, answer in rows], pad_id)
    target = torch.full(ids.shape, -100)
    for i, (prompt, answer) in enumerate(rows):
        target[i, len(prompt): len(prompt) + len(answer)] = torch.tensor(answer)
    return ids, mask, target


def pair_ids(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + eos) of each (prompt, answer) pair."""
    return [(list(tokenizer(prompt)["input_ids"]), list(tokenizer(answer)["input_ids"]) + [tokenizer.eos_token_id])
            for prompt, answer in pairs]


def answer_loss(model, ids, mask, target):
    """Cross-entropy of the answer tokens (labels other than -100), teacher-forced."""
    return answer_logits_loss(model(input_ids=ids, attention_mask=mask).logits, target)


def answer_logits_loss(logits, target):
    """Cross-entropy of next-token ``logits`` against the answer tokens of ``target`` (-100 elsewhere)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), target[:, 1:].flatten())


@torch.no_grad()
def recalls_everything(model, ids, mask, target) -> bool:
    """Whether every answer token (eos included) is the argmax, teacher-forced."""
    predicted, gold = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1), target[:, 1:]
    return not ((predicted != gold) & (gold != -100)).any().item()
