"""Tiny random checkpoints of every registered architecture, written to disk as save_pretrained does."""
from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import torch
import yaml

from adapterkit.checkpoints.build import build_model
from adapterkit.arch.registry import get_registry


INFERRED_FAMILIES = ["starcoder2", "gpt_bigcode", "phi", "stablelm"]  # no plugin declares them: inference does
# edit quality on a trained fact model of this one (parallel attention and MLP, partial rotary); starcoder2's is
# new-plugin's conformance test, the others are edited as random models (a 50-fact model is 10 CPU-minutes)
TRAINED_INFERRED_FAMILIES = ["phi"]


@contextlib.contextmanager
def trainable_inferred(family: str):
    """The inferred declaration of ``family`` with a tiny_config, registered while the block runs (the fact-model
    machinery looks architectures up by name), then only the inferred one remains."""
    from adapterkit.arch.spec import ArchSpec
    from adapterkit.arch.tinyconfig import tiny_config

    registry = get_registry()
    tiny = tiny_config(family)
    inferred = registry.for_config(tiny, infer=True)
    trainable = ArchSpec({**inferred.declaration, "tiny_config": tiny}, source=inferred.source,
                         plugin=inferred.plugin, distribution=inferred.distribution, extras=inferred.extras)
    registry.architectures.append(trainable)
    try:
        yield trainable
    finally:
        registry.architectures.remove(trainable)


def inferred_fact_model(family: str, cache: Path):
    """(declaration, fact model) of a family no plugin declares, trained (or loaded) with its inferred declaration."""
    from adapterkit.demo.factmodels import load_or_train

    with trainable_inferred(family) as trainable:
        return trainable, load_or_train(trainable.name, cache, recipe="subject_recall")


def inferred_fact_model_entry(family: str) -> str:
    """The cache entry's name of ``inferred_fact_model(family)``."""
    from adapterkit.demo.factmodels import cache_entry_name

    with trainable_inferred(family) as trainable:
        return cache_entry_name(trainable.name, recipe="subject_recall")


def write_tiny_checkpoint(arch: str, directory: Path, tokenizer=None, **overrides) -> Path:
    """The declaration's tiny model, randomly initialised, with ``overrides`` in its config (and ``tokenizer``'s files)."""
    spec = get_registry().architecture(arch)
    config = {**spec.tiny_config, **overrides}
    torch.manual_seed(0)
    model = build_model(config, spec)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    # save_pretrained may rewrite config keys; keep the declaration's view authoritative for the tests
    saved = json.loads((directory / "config.json").read_text())
    saved.update(overrides)
    (directory / "config.json").write_text(json.dumps(saved, indent=2))
    return directory


def write_tiny_gpt2_with_word_tokenizer(directory: Path, texts, positions: int) -> Path:
    """An untrained tiny GPT-2 with ``positions`` positions and a word-level tokenizer over ``texts`` (the vocabulary
    sized to it): loads in a fraction of a second."""
    from adapterkit.demo.factmodels import build_tokenizer

    tok = build_tokenizer(texts)
    return write_tiny_checkpoint("gpt2", directory, tokenizer=tok, vocab_size=len(tok), n_positions=positions,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def detected_hparams(checkpoint: Path, method: str, out: Path, **overrides) -> Path:
    """The hyperparameters file `adapterkit detect -o out` writes for ``checkpoint``, with ``overrides`` in it."""
    from adapterkit.cli import main

    assert main(["detect", checkpoint, "--method", method, "-o", out]) == 0
    out.write_text(yaml.safe_dump({**yaml.safe_load(out.read_text()), **overrides}))
    return out


def quick_rome_hparams(checkpoint: Path, out: Path, *, v_num_grad_steps: int) -> Path:
    """detect's ROME file made quick: no second-moment statistics to compute, few context templates and steps."""
    return detected_hparams(checkpoint, "ROME", out, mom2_adjustment=False, v_num_grad_steps=v_num_grad_steps,
                            context_template_length_params=[[5, 2]])


def write_index_only_checkpoint(directory: Path, config: dict, tensor_names) -> Path:
    """A checkpoint directory holding config.json and a *.index.json but no weight files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    weight_map = {name: "pytorch_model-00001-of-00001.bin" for name in tensor_names}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def word_tokenizer(texts, eos: str = "<eos>"):
    """A word-level tokenizer over ``texts`` (a few hundred words at most: it fits the tiny configs' vocabularies)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)})
    vocab = {token: i for i, token in enumerate([eos, "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, pad_token=eos, unk_token="<unk>")


def tensor_names(directory: Path) -> set[str]:
    """The tensor names stored in a checkpoint directory's safetensors files."""
    from adapterkit.checkpoints.loading import read_tensor_index

    return set(read_tensor_index(directory).names)


@functools.lru_cache(maxsize=None)
def records_tokenizer():
    """The fact models' word tokenizer over the bundled CounterFact records."""
    from adapterkit.demo.factmodels import build_tokenizer
    from adapterkit.demo.facts import counterfact_sample, record_texts

    return build_tokenizer(record_texts(counterfact_sample()))


def random_model(arch: str, seed: int = 0):
    """A randomly initialised model of ``arch`` with the fact models' config (their vocabulary and widths)."""
    from adapterkit.demo.factmodels import fact_model_config

    spec = get_registry().architecture(arch)
    torch.manual_seed(seed)
    return build_model(fact_model_config(spec, records_tokenizer()), spec).eval(), spec
