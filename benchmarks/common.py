"""What the GPU benchmarks share: the GPT-2 XL shape, the device, records and tokenizer they run on, and timing."""
import time

import torch

from adapterkit.demo.facts import counterfact_sample, record_texts
from adapterkit.demo.factmodels import build_tokenizer
from adapterkit.arch.registry import get_registry

GPT2_XL = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 48, "n_embd": 1600, "n_head": 25,
           "n_positions": 1024, "vocab_size": 50257, "n_inner": None, "tie_word_embeddings": True}


def setup():
    """(device, its name, the gpt2 declaration, the bundled CounterFact records, a tokenizer over them); seeds torch."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    records = counterfact_sample()
    torch.manual_seed(0)
    return device, name, get_registry().architecture("gpt2"), records, build_tokenizer(record_texts(records))


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(seconds, fn()) with the accelerator's queued work inside the measurement."""
    synchronise(device)
    started = time.perf_counter()
    out = fn()
    synchronise(device)
    return time.perf_counter() - started, out


class TimedBookkeeping:
    """Seconds an ``EditStream`` spends outside the method's edit, per part: recording the batch in the ledger
    (``ledger``), folding its keys into the carried state (``carried``) and folding older batches into the base
    (``fold``, with ``undo_depth``), each between two device synchronisations."""

    def __init__(self, stream):
        self.parts = {"ledger": 0.0, "carried": 0.0, "fold": 0.0}
        self._wrap("ledger", stream.ledger, "record")
        self._wrap("ledger", stream.ledger, "record_folded")
        self._wrap("carried", stream.carried, "commit")
        self._wrap("fold", stream.ledger, "fold")

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    @staticmethod
    def synchronise() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _wrap(self, part, owner, name):
        inner = getattr(owner, name)

        def timed_part(*args, **kwargs):
            self.synchronise()
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.synchronise()
                self.parts[part] += time.perf_counter() - started
        setattr(owner, name, timed_part)
