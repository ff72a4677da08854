"""Tied lm-heads: the checkpoint's config decides, detect and edits work on tied checkpoints of every family that
can tie, and a tensor with two names is written, saved and restored once."""
import copy
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

import adapterkit
from adapterkit.arch.detect import write_yaml
from adapterkit.checkpoints.loading import load_model
from adapterkit.checkpoints.build import build_model
from adapterkit.editing.result import EditResult, tensor_aliases
from adapterkit.errors import AdapterkitError, CheckpointError
from adapterkit.methods.mend import inner_shapes
from adapterkit.arch.registry import get_registry
from adapterkit.arch.validate import validate_file

from checkpoints import tensor_names, word_tokenizer, write_tiny_checkpoint

ARCHS = get_registry().architecture_names()
REQUEST = {"prompt": "The Eiffel Tower is located in", "subject": "The Eiffel Tower", "target_new": "Rome",
           "ground_truth": "Paris", "rephrase_prompt": "The Eiffel Tower stands in",
           "locality_prompt": "The Colosseum is located in", "locality_ground_truth": "Rome"}
TEXTS = [REQUEST[k] for k in ("prompt", "rephrase_prompt", "locality_prompt")] + ["Rome Paris London is a city of the"]
FAST = {"context_template_length_params": [[5, 5]]}


def tied_config(arch: str, tie) -> dict:
    spec = get_registry().architecture(arch)
    config = {k: v for k, v in spec.tiny_config.items() if k != "tie_word_embeddings"}
    return config if tie is None else {**config, "tie_word_embeddings": tie}


def ties_when_asked(arch: str) -> bool:
    return get_registry().architecture(arch).lm_head_tied(tied_config(arch, True))


@pytest.mark.parametrize("tie", [None, True, False], ids=["family-default", "tied", "untied"])
@pytest.mark.parametrize("arch", ARCHS)
def test_the_declaration_agrees_with_the_model_class_on_tying(arch, tie):
    spec = get_registry().architecture(arch)
    config = tied_config(arch, tie)
    with torch.device("meta"):
        model = build_model(config, spec)
    assert spec.lm_head_tied(config) == spec.lm_head_shares_embedding(model)


@pytest.fixture(scope="module")
def tied_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tied")
    tok = word_tokenizer(TEXTS)
    return {arch: write_tiny_checkpoint(arch, root / arch, tokenizer=tok, tie_word_embeddings=True)
            for arch in ARCHS if ties_when_asked(arch)}


def test_the_families_that_tie_are_tested():
    assert {"gpt2", "gptj", "gpt_neox", "llama"} <= {a for a in ARCHS if ties_when_asked(a)}


@pytest.mark.parametrize("arch", ARCHS)
def test_a_tied_checkpoint_without_a_head_weight_detects_and_takes_a_rome_edit(tied_checkpoints, arch):
    if arch not in tied_checkpoints:
        pytest.skip(f"{arch}'s model class keeps its head apart whatever the config says")
    path, spec = tied_checkpoints[arch], get_registry().architecture(arch)
    assert spec.weight_name("embed") in {spec.model_tensor_name(n) for n in tensor_names(path)}
    assert spec.weight_name("lm_head") not in {spec.model_tensor_name(n) for n in tensor_names(path)}
    memit = adapterkit.detect(path, method="MEMIT")
    hp = {**adapterkit.detect(path, method="ROME"), **FAST}
    assert hp["lm_head_module"] == memit["lm_head_module"] == spec.module_name("lm_head")

    # the word tokenizer the checkpoint was written with: transformers picks a checkpoint's tokenizer class by its
    # model_type for some families (Qwen2's rebuilds a BPE tokenizer, which a word-level vocabulary does not fit)
    model, _ = load_model(path, tokenizer=False)
    tok = word_tokenizer(TEXTS)
    head = model.get_submodule(hp["lm_head_module"]).weight
    assert head is spec.module(model, "embed").weight  # the detected head is the embedding's tensor
    before = copy.deepcopy(model.state_dict())
    result = adapterkit.edit(model, tok, [REQUEST], hp)
    changed = [n for n, v in model.state_dict().items() if not torch.equal(v, before[n])]
    assert changed == result.touched == [f"{hp['rewrite_module_tmp'].format(hp['layers'][0])}.weight"]
    assert result.metrics[0]["post"]["locality"] is not None  # the metrics ran through the tied head
    result.restore()
    assert all(torch.equal(v, before[n]) for n, v in model.state_dict().items())


def test_an_untied_checkpoint_missing_its_head_says_which_flag_to_set(tmp_path):
    path = write_tiny_checkpoint("llama", tmp_path / "ckpt")
    weights = load_file(path / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        adapterkit.detect(path, method="ROME")
    assert "'lm_head.weight'" in err.value.message and "tie_word_embeddings: false" in err.value.message
    assert '"tie_word_embeddings": true' in err.value.fix and "llama.yaml" not in err.value.fix
    config = json.loads((path / "config.json").read_text())
    config.pop("tie_word_embeddings")
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not set tie_word_embeddings"):
        adapterkit.detect(path, method="ROME")
    config["tie_word_embeddings"] = True
    (path / "config.json").write_text(json.dumps(config))
    assert adapterkit.detect(path, method="ROME")["lm_head_module"] == "lm_head"


# --- one tensor, two names ------------------------------------------------------------------------
def tied_gpt2():
    spec = get_registry().architecture("gpt2")
    torch.manual_seed(0)
    return build_model(tied_config("gpt2", True), spec), spec


def test_an_edit_through_both_names_keeps_one_original_one_delta_and_restores_once(tmp_path):
    model, spec = tied_gpt2()
    head, embed = spec.weight_name("lm_head"), spec.weight_name("embed")
    assert tensor_aliases(model) == {head: embed}
    original = model.get_parameter(embed).detach().clone()
    result = EditResult(model=model, hparams={"alg_name": "test"})
    first, second = torch.randn_like(original), torch.randn_like(original)
    result.add(head, first)
    result.add(embed, second)
    assert result.touched == [embed] and list(result.deltas) == [embed]
    edited = model.get_parameter(embed).detach().clone()
    assert torch.allclose(edited, original + first + second)
    result.save(tmp_path / "deltas.safetensors")
    assert set(load_file(tmp_path / "deltas.safetensors")) == {embed}
    result.restore()
    assert torch.equal(model.get_parameter(head), original)

    fresh, _ = tied_gpt2()
    replayed = adapterkit.apply_deltas(fresh, tmp_path / "deltas.safetensors")
    assert torch.equal(fresh.get_parameter(head), edited) and replayed.touched == [embed]
    replayed.restore()
    assert torch.equal(fresh.get_parameter(head), original)


def test_deltas_for_both_names_are_refused_on_a_tied_model_before_any_write(tmp_path):
    model, spec = tied_gpt2()
    head, embed = spec.weight_name("lm_head"), spec.weight_name("embed")
    shape = model.get_parameter(embed).shape
    untied = EditResult(model=None, hparams={}, deltas={head: torch.ones(shape, dtype=torch.float64),
                                                        embed: torch.ones(shape, dtype=torch.float64)})
    untied.save(tmp_path / "untied.safetensors")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(AdapterkitError, match="one tensor in this model"):
        adapterkit.apply_deltas(model, tmp_path / "untied.safetensors", check_base=False)
    assert all(torch.equal(v, before[n]) for n, v in model.state_dict().items())


@pytest.mark.parametrize("role", ["lm_head", "embed"])
def test_mend_refuses_inner_params_on_a_tied_weight(role):
    model, spec = tied_gpt2()
    with pytest.raises(AdapterkitError, match="tied weight") as err:
        inner_shapes(model, SimpleNamespace(inner_params=[spec.weight_name("mlp_out", 0), spec.weight_name(role)]))
    assert "detect" in err.value.fix


def test_declarations_cannot_give_mend_the_head_or_the_embedding():
    from adapterkit.arch.schema import load_schema

    inner = load_schema("architecture")["$defs"]["method_defaults"]["properties"]["inner_params"]
    assert not {"embed", "lm_head"} & set(inner["properties"]["roles"]["items"]["enum"])


def test_validate_names_a_tied_weight_in_inner_params(tied_checkpoints, tmp_path):
    path, spec = tied_checkpoints["llama"], get_registry().architecture("llama")
    hp = adapterkit.detect(path, method="MEND")
    hp["inner_params"] = hp["inner_params"][:1] + [spec.weight_name("embed")]
    file = tmp_path / "mend.yaml"
    write_yaml(hp, file)
    report = validate_file(file, model_path=path)
    assert "/inner_params/1" in report and "tied lm-head" in report
