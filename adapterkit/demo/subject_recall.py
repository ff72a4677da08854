"""The subject-recall recipe for fact models: facts recalled through the subject's state, as in pretrained LMs.

Why interchange training. Trained on (prompt, answer) pairs alone, these models copy the subject's
token embeddings to the last position with layer-0 attention and look the fact up there: the
subject position's later states are never read, so ROME, MEMIT and PMET (which rewrite the MLP
output at the subject's last token) cannot move them, and more phrasings, answer-after-subject pairs
or a sub-word tokenizer do not change that. Each step therefore also runs a prompt of another subject
whose answer is of the same kind, puts its state at the subject's last token after layer
``INTERCHANGE_LAYER`` in place of this prompt's, and trains the model to give the other subject's
answer (interchange intervention training, Geiger et al. 2022). The model then recalls through the
subject's state, as causal tracing finds in pretrained models (Meng et al. 2022). Half the prompts
sit behind a random few-word sentence, the shape of ROME's context templates, so that state does
not depend on the subject opening the text.

Why identity codes and traits. With one fact per subject, a subject's state at the edited layer would
be its answer, so subjects sharing an answer (an edit's subject and its CounterFact locality subject)
would share their key and an edit of one would move both. A subject of a pretrained model carries
many attributes, so its key is its own. Every subject named in the records (locality subjects
included) therefore also gets a made-up code ("Michel Denisot's code is K0") and
a few made-up traits ("Michel Denisot's gem is onyx", drawn from a hash of the name), trained as facts
and through the interchange: the traits shrink the whitened key overlap of edit and locality subjects
and raise MEMIT's locality (benchmarks/RESULTS.md, "Fact-model settings, measured").
"""
from __future__ import annotations

import hashlib
from typing import Iterable, NamedTuple, Sequence

import torch

from ..editing import hooks, tokens
from ..arch.spec import ArchSpec
from .facts import answer_logits_loss, counterfact_sample, fact_pairs, padded_answers, pair_ids, recalls_everything

INTERCHANGE_LAYER = 1  # the layer ROME and MEMIT edit in these 4-layer models (17 of 48 at the reference size)
PREFIX_RATE = 0.5      # share of training prompts behind a random prefix
MAX_PREFIX_WORDS = 4


# --- who the records name -------------------------------------------------------------------------
def record_subjects(record: dict) -> list[tuple[str, str]]:
    """(prompt naming a subject, that subject) of the record's prompt, rephrase and locality prompt.

    CounterFact's locality prompts carry no subject field; the bundled sample adds one (``locality_subject``,
    see adapterkit/demo/data/NOTICE.md), since titles such as "Murder, She Wrote" defeat any rule."""
    return [(record["prompt"], record["subject"]), (record["rephrase_prompt"], record["subject"]),
            (record["locality_prompt"], record["locality_subject"])]


IDENTITY_KIND = "identity code"
TRAITS = {  # made-up attributes every named subject also gets beside its code (see the module docstring)
    "colour": ("red", "blue", "green", "yellow", "black", "white", "purple", "orange"),
    "animal": ("cat", "dog", "horse", "owl", "fox", "bear", "wolf", "hare"),
    "metal": ("iron", "gold", "silver", "copper", "tin", "lead", "zinc", "nickel"),
    "tree": ("oak", "pine", "elm", "ash", "birch", "maple", "cedar", "willow"),
    "gem": ("ruby", "pearl", "opal", "jade", "amber", "topaz", "garnet", "onyx"),
}
SETTINGS = {"traits": TRAITS, "interchange_layer": INTERCHANGE_LAYER, "prefix_rate": PREFIX_RATE,
            "max_prefix_words": MAX_PREFIX_WORDS}  # in the fact models' cache key


def named_subjects(records: Iterable[dict]) -> list[str]:
    """Every subject the records name (locality subjects included), in order of first appearance."""
    seen: dict[str, None] = {}
    for r in records:
        for _, subject in record_subjects(r):
            seen.setdefault(subject, None)
    return list(seen)


def identity_codes(records: Iterable[dict]) -> dict[str, str]:
    """subject -> " K<n>", a made-up attribute unique to each subject the records name (locality subjects
    included), numbered in order of appearance so that a prefix of the records keeps its codes. It exists only
    in these fixtures; see this module's docstring for why."""
    return {subject: f" K{n}" for n, subject in enumerate(named_subjects(records))}


def _trait_value(subject: str, trait: str, values: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{trait}:{subject}".encode()).digest()
    return values[int.from_bytes(digest[:4], "big") % len(values)]


def made_up_facts(records: Iterable[dict]) -> list[tuple[str, str, str, str]]:
    """(prompt, " answer", subject, kind) of every made-up fact: each named subject's code and traits."""
    facts = []
    for subject, code in identity_codes(records).items():
        facts.append((f"{subject}'s code is", code, subject, IDENTITY_KIND))
        for trait, values in TRAITS.items():
            facts.append((f"{subject}'s {trait} is", " " + _trait_value(subject, trait, values), subject, trait))
    return facts


def made_up_pairs(records: Iterable[dict]) -> list[tuple[str, str]]:
    """(prompt, answer) of every made-up fact (made_up_facts)."""
    return [(prompt, answer) for prompt, answer, _, _ in made_up_facts(records)]


# --- interchange training: recall through the subject ---------------------------------------------
class SubjectFact(NamedTuple):
    """A prompt that names its subject, as ids; where the subject ends; its answer's first id; the answer's kind."""
    ids: list[int]
    subject_last: int
    answer: int
    kind: str


def answer_kinds(records: Iterable[dict]):
    """answer -> a representative of its kind: answers that a record's target and ground truth link (languages,
    cities, instruments...) share a kind, so one subject's answer is a sensible answer for another's prompt."""
    parent: dict[str, str] = {}

    def find(answer: str) -> str:
        parent.setdefault(answer, answer)
        while parent[answer] != answer:
            answer = parent[answer]
        return answer

    for r in records:
        parent[find(r["ground_truth"])] = find(r["target_new"])
    return find


def subject_facts(tokenizer, records: Sequence[dict], kind_of) -> list[SubjectFact]:
    """Every prompt of the records that names its subject (record_subjects) and every made-up fact's prompt,
    with the position of the subject's last token; codes and each trait are answers of a kind of their own."""
    def fact(text: str, subject: str, answer: str, kind: str) -> SubjectFact:
        prompt = tokens.in_context(text, subject)
        ids = tokens.token_ids(tokenizer, prompt.text)
        return SubjectFact(ids, tokens.lookup_index(tokenizer, prompt, "subject_last", ids),
                           tokenizer(answer)["input_ids"][0], kind)

    facts = []
    for r in records:
        answers = [r["ground_truth"]] * 2 + [r["locality_ground_truth"]]
        facts += [fact(text, subject, " " + answer, kind_of(answer))
                  for (text, subject), answer in zip(record_subjects(r), answers)]
    facts += [fact(prompt, subject, answer, kind) for prompt, answer, subject, kind in made_up_facts(records)]
    return facts


def interchange_partners(facts: Sequence[SubjectFact]) -> list[list[int]]:
    """For each fact, the facts whose answer is of the same kind but another word."""
    return [[j for j, other in enumerate(facts) if other.kind == fact.kind and other.answer != fact.answer]
            for fact in facts]


def _prefixed(ids: list[int], rng, vocab_size: int, full_stop: int) -> tuple[list[int], int]:
    """``ids`` behind a random few-word sentence (the shape of ROME's context templates) or alone; the shift."""
    if rng.random() >= PREFIX_RATE:
        return ids, 0
    prefix = [rng.randrange(3, vocab_size) for _ in range(rng.randint(1, MAX_PREFIX_WORDS))] + [full_stop]
    return prefix + ids, len(prefix)


def interchange_loss(model, spec: ArchSpec, base: Sequence[SubjectFact], source: Sequence[SubjectFact],
                     pad_id: int, layer: int = INTERCHANGE_LAYER, answer_rows: Sequence[tuple[list[int], list[int]]] = ()):
    """Loss and accuracy of ``base`` prompts answering like ``source`` once the source subject's state after
    ``layer`` (at its last token) replaces the base subject's.

    With ``answer_rows`` ((prompt ids, answer ids) pairs) the same forward also runs them, unpatched, and their
    teacher-forced answer loss is added: a training step's two losses in one forward and one backward.
    """
    name = spec.module_name("layer", layer)
    source_batch = tokens.pad_rows([f.ids for f in source], [f.subject_last for f in source], pad_id)
    with hooks.trace(model, outputs=[name], stop=True) as record:
        hooks.run(model, source_batch)
    states = record.outputs[name][torch.arange(len(source)), source_batch.lookup]
    first = len(answer_rows)
    ids, mask, target = padded_answers(list(answer_rows) + [(f.ids, []) for f in base], pad_id)
    rows, subject_last = torch.arange(first, first + len(base)), torch.tensor([f.subject_last for f in base])
    with hooks.edit_output(model, name, lambda out: out.index_put((rows, subject_last), states.to(out.dtype))):
        logits = model(input_ids=ids, attention_mask=mask).logits
    last = torch.tensor([len(f.ids) - 1 for f in base])
    swapped, gold = logits[rows, last].float(), torch.tensor([f.answer for f in source])
    loss = torch.nn.functional.cross_entropy(swapped, gold)
    if first:
        loss = loss + answer_logits_loss(logits[:first], target[:first])
    return loss, (swapped.argmax(-1) == gold).float().mean().item()


class _Sampler:
    """Random training rows: answer pairs and interchange pairs, some behind random prefixes."""

    def __init__(self, tokenizer, records: Sequence[dict], seed: int):
        import random

        self.rng = random.Random(seed)
        self.pad_id, self.vocab_size = tokenizer.pad_token_id, len(tokenizer)
        self.full_stop = tokenizer.convert_tokens_to_ids(".")
        self.pairs = pair_ids(tokenizer, fact_pairs(records) + made_up_pairs(records))
        self.facts = subject_facts(tokenizer, records, answer_kinds(counterfact_sample()))
        self.partners = interchange_partners(self.facts)
        self.swappable = [i for i, p in enumerate(self.partners) if p]

    def prefixed(self, fact: SubjectFact) -> SubjectFact:
        ids, shift = _prefixed(fact.ids, self.rng, self.vocab_size, self.full_stop)
        return fact._replace(ids=ids, subject_last=fact.subject_last + shift)

    def answer_rows(self, indices: Sequence[int]) -> list[tuple[list[int], list[int]]]:
        return [(_prefixed(self.pairs[i][0], self.rng, self.vocab_size, self.full_stop)[0], self.pairs[i][1])
                for i in indices]

    def interchange_batch(self, size: int, prefix: bool = True):
        chosen = self.rng.sample(self.swappable, min(size, len(self.swappable))) if size else self.swappable
        base = [self.facts[i] for i in chosen]
        source = [self.facts[self.rng.choice(self.partners[i])] for i in chosen]
        if prefix:
            base, source = [self.prefixed(f) for f in base], [self.prefixed(f) for f in source]
        return base, source


def train(model, spec: ArchSpec, records: Sequence[dict], tokenizer, optimiser, schedule, *, steps: int, seed: int,
          batch_size: int) -> None:
    """Answer pairs and interchange pairs, until both are learnt and half as long again (at most ``steps``)."""
    sampler = _Sampler(tokenizer, records, seed)
    ids, mask, target = padded_answers(sampler.pairs, tokenizer.pad_token_id)
    shuffle = torch.Generator().manual_seed(seed)
    step, learnt_at = 0, None
    while step < steps:
        if _learnt(model, spec, sampler, ids, mask, target):  # checked again at the end: a fact can slip
            learnt_at = step if learnt_at is None else learnt_at
            if step >= learnt_at + max(learnt_at // 2, 20):
                break
        for batch in torch.randperm(len(ids), generator=shuffle).split(batch_size):
            answers = sampler.answer_rows(batch.tolist())
            loss = interchange_loss(model, spec, *sampler.interchange_batch(batch_size), sampler.pad_id,
                                    answer_rows=answers)[0]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1


@torch.no_grad()
def _learnt(model, spec, sampler: _Sampler, ids, mask, target) -> bool:
    """Every fact recalled, and every subject's state, put into another prompt, answered from."""
    return recalls_everything(model, ids, mask, target) and _swap_accuracy(model, spec, sampler) == 1.0


def _swap_accuracy(model, spec: ArchSpec, sampler: _Sampler) -> float:
    return interchange_loss(model, spec, *sampler.interchange_batch(0, prefix=False), sampler.pad_id)[1]


@torch.no_grad()
def swap_accuracy(model, spec: ArchSpec, tokenizer, records: Sequence[dict], seed: int = 0) -> float:
    """Share of the records' subject prompts that answer like another subject once given its state after
    ``INTERCHANGE_LAYER`` at the subject's last token: near 1 when the model recalls through the subject."""
    return _swap_accuracy(model, spec, _Sampler(tokenizer, records, seed))
