"""Declarations inferred for model types no plugin declares: agreement with the built-in ones, refusals, detect's
report, and ROME edits with inferred settings."""
import functools
import json

import pytest
import torch
import yaml

import adapterkit
from adapterkit.arch import registry as registry_module
from adapterkit.arch.detect import detect
from adapterkit.checkpoints.build import build_model
from adapterkit.errors import CheckpointError, InferenceRefused, UnknownArchitectureError
from adapterkit.demo.factmodels import build_tokenizer, tiny_hparams
from adapterkit.demo.facts import counterfact_sample, record_texts
from adapterkit.settings.hparams import load_hparams
from adapterkit.arch.inference import _Inferrer, infer
from adapterkit.arch.registry import Registry, get_registry
from adapterkit.requests import normalise_requests
from adapterkit.arch.tinyconfig import tiny_config, write_checkpoint
from checkpoints import INFERRED_FAMILIES, TRAINED_INFERRED_FAMILIES, inferred_fact_model

# built-ins whose model type transformers builds and whose MLP is dense: inference must find what they declare
INFERABLE = [a for a in get_registry().architecture_names()
             if get_registry().architecture(a).config_class() is None
             and "mixture_of_experts" not in get_registry().architecture(a).declaration]
# families no plugin declares, edited below with inferred settings


@pytest.fixture
def bare_registry(monkeypatch):
    """The process registry with the methods only: every architecture's declaration hidden."""
    bare = Registry()
    from adapterkit_plugins import methods

    bare.add_plugin(methods, "methods", "adapterkit", adapterkit.__version__)
    monkeypatch.setattr(registry_module, "_registry", bare)
    return bare


def _resolved(spec, config):
    return {what: spec.config_value(config, what) for what in ("num_layers", "hidden_size", "intermediate_size", "vocab_size")}


@pytest.mark.parametrize("arch", INFERABLE)
def test_the_inferred_declaration_agrees_with_the_built_in_one(arch):
    built_in = get_registry().architecture(arch)
    config = built_in.tiny_config
    inferred = Registry().for_config(config, infer=True)
    assert inferred.extras["inference"].declaration is inferred.declaration
    for role in ("embed", "layer", "attn", "attn_out", "mlp", "mlp_in", "mlp_gate", "mlp_out", "ln_f", "lm_head"):
        assert inferred.has_role(role) == built_in.has_role(role), role
        if built_in.has_role(role):
            assert inferred.template(role) == built_in.template(role), role
    for fact in ("weight_layout", "norm", "tied_lm_head", "mlp_in_fused"):
        assert getattr(inferred, fact) == getattr(built_in, fact), fact
    assert _resolved(inferred, config) == _resolved(built_in, config)


def test_every_role_says_how_it_was_found_and_how_sure():
    inference = infer(get_registry().architecture("bloom").tiny_config)
    roles = {f.role: f for f in inference.findings}
    assert {"layers", "attn", "attn_out", "mlp", "mlp_in", "mlp_out", "ln_f", "norm", "embed", "lm_head",
            "weight_layout", "num_layers", "hidden_size", "intermediate_size", "vocab_size"} <= set(roles)
    assert all(f.confidence in ("high", "medium") and f.how for f in inference.findings)
    # BLOOM's MLP adds the residual itself: the traced forward pass shows it, so the projection is the value point
    assert roles["mlp"].path == "transformer.h.0.mlp.dense_4h_to_h" and "not the projection's" in roles["mlp"].how
    assert "tied" in roles["lm_head"].how
    assert "how it was found" in inference.table().splitlines()[0]


def test_a_gate_is_told_from_the_up_projection_by_what_the_activation_reads():
    roles = {f.role: f for f in infer(get_registry().architecture("gemma").tiny_config).findings}
    assert roles["mlp_gate"].path.endswith("mlp.gate_proj") and "(traced)" in roles["mlp_gate"].how


def test_a_mixture_of_experts_is_refused_with_the_reason():
    config = tiny_config("mixtral")
    with pytest.raises(InferenceRefused) as err:
        infer(config)
    assert "mixture of experts" in err.value.message and "router-weighted" in err.value.message
    assert "shared expert" in err.value.message and "plugin" in err.value.fix


def test_the_shared_expert_model_is_refused_when_its_declaration_is_hidden():
    with pytest.raises(InferenceRefused, match="mixture of experts"):
        Registry().for_config(get_registry().architecture("qwen2_moe").tiny_config, infer=True)


def test_blocks_of_one_class_holding_different_modules_are_refused():
    with pytest.raises(InferenceRefused, match="hybrid models"):  # linear-attention and full-attention blocks
        infer(tiny_config("qwen3_5_text"))


def test_a_model_type_transformers_does_not_know_is_refused_without_running_checkpoint_code():
    config = {"model_type": "brand_new_lm", "auto_map": {"AutoModelForCausalLM": "modeling_brand_new.BrandNew"}}
    with pytest.raises(InferenceRefused) as err:
        Registry().for_config(config, infer=True)
    assert "trust_remote_code stays off" in err.value.message and "new-plugin" in err.value.fix


def test_an_ambiguous_role_is_refused_rather_than_guessed():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = torch.nn.Sequential(torch.nn.Linear(8, 8))
            self.cross_attn = torch.nn.Sequential(torch.nn.Linear(8, 8))
            self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Linear(32, 8))

    class Toy(torch.nn.Module):
        config = type("Config", (), {"num_hidden_layers": 2})()

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(16, 8)
            self.layers = torch.nn.ModuleList([Block(), Block()])

    with pytest.raises(InferenceRefused, match="cannot tell the attention module .*self_attn.*cross_attn"):
        _Inferrer(Toy(), {"num_hidden_layers": 2}, "toy").run()


# --- detect, the CLI and edits --------------------------------------------------------------------
@pytest.fixture(scope="module")
def starcoder2(tmp_path_factory):
    return write_checkpoint(tiny_config("starcoder2"), tmp_path_factory.mktemp("ckpt") / "starcoder2")


def test_detect_says_the_declaration_was_inferred_and_its_hparams_stay_schema_valid(starcoder2, tmp_path):
    hparams = detect(starcoder2, method="MEMIT")
    assert hparams.declaration_source == "inferred" and hparams.inference.confidence == "high"
    assert hparams["rewrite_module_tmp"] == "model.layers.{}.mlp.c_proj"
    out = tmp_path / "memit.yaml"
    out.write_text(yaml.safe_dump(hparams))
    assert load_hparams(out) == hparams and "declaration_source" not in hparams
    spec = get_registry().architecture("gpt2")
    build_model(spec.tiny_config, spec).save_pretrained(tmp_path / "gpt2")
    assert detect(tmp_path / "gpt2", method="ROME").declaration_source == "plugin"


def test_the_cli_says_so_on_stderr_and_explains_on_request(starcoder2, capsys):
    from adapterkit.cli import main

    assert main(["detect", starcoder2, "--method", "rome"]) == 0
    captured = capsys.readouterr()
    assert "INFERRED" in captured.err and "how it was found" not in captured.err
    assert yaml.safe_load(captured.out)["architecture"] == "starcoder2"
    assert main(["detect", starcoder2, "--method", "rome", "--explain"]) == 0
    table = capsys.readouterr().err
    assert "how it was found" in table and "model.layers.0.mlp.c_proj" in table


def test_edit_uses_an_inferred_declaration_only_once_it_was_asked_for(starcoder2, bare_registry):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(starcoder2)
    with pytest.raises(UnknownArchitectureError) as err:
        bare_registry.for_model(model)
    assert "infers a declaration" in err.value.fix
    loaded, _ = adapterkit.load_model(starcoder2)
    assert bare_registry.for_model(loaded).extras["inference"] is not None


@pytest.mark.parametrize("family", INFERRED_FAMILIES)
def test_rome_edits_a_random_model_of_an_inferred_family(family, tmp_path, bare_registry):
    """One edit's efficacy on a random model; its key is the prompt's last token, since a random model does not
    carry the subject's state forward (the trained fact models below do)."""
    tok = build_tokenizer(record_texts(counterfact_sample()))
    config = tiny_config(family)
    config["vocab_size"] = max(config["vocab_size"], len(tok))
    path = write_checkpoint(config, tmp_path / family)
    hparams = detect(path, method="ROME")
    assert hparams.declaration_source == "inferred"
    model, _ = adapterkit.load_model(path, dtype=torch.float32, tokenizer=False)
    hp = {**hparams, **tiny_hparams("ROME"), "mom2_adjustment": False, "context_template_length_params": [],
          "fact_token": "last", "v_weight_decay": 0.0}
    result = adapterkit.edit(model, tok, normalise_requests(counterfact_sample()[1]), hp)
    assert result.touched == [hparams["rewrite_module_tmp"].format(hparams["layers"][0]) + ".weight"]
    assert result.metrics[0]["pre"]["rewrite_acc"] == 0.0 and result.metrics[0]["post"]["rewrite_acc"] == 1.0
    assert json.dumps(dict(hparams))


# --- edit quality on trained fact models of inferred families ----------------------------------------
@pytest.fixture(scope="module")
def inferred_fact_models(fact_model_cache):
    return functools.partial(inferred_fact_model, cache=fact_model_cache)


@pytest.mark.slow
@pytest.mark.parametrize("family", TRAINED_INFERRED_FAMILIES)
def test_rome_edits_a_trained_fact_model_of_an_inferred_family(family, inferred_fact_models, tmp_path, quality):
    from adapterkit.arch.detect import method_hparams
    from adapterkit.editing.metrics import summarise
    from adapterkit.demo.factmodels import write_stats_corpus

    spec, fact = inferred_fact_models(family)
    hp = method_hparams(spec, fact.model.config.to_dict(), get_registry().method("ROME"), model_name=f"test-{family}")
    hp.update(tiny_hparams("ROME"), mom2_corpus=str(write_stats_corpus(fact, tmp_path / "facts.txt")),
              stats_dir=str(tmp_path / "stats"), mom2_n_samples=1000, mom2_dataset="facts")
    rows = []
    for record in fact.facts.trained[:12]:
        with adapterkit.edited(fact.model, fact.tok, record, hp) as result:
            rows += result.metrics
    measured = summarise(rows)
    quality(f"ROME {family} (inferred declaration)", measured)
    assert all(row["pre"]["rewrite_acc"] == 0.0 for row in rows)
    assert measured["efficacy"] >= 0.9, measured


def test_an_inferred_declaration_gets_the_config_checks_of_a_plugins_one():
    config = tiny_config("starcoder2")
    with pytest.raises(CheckpointError, match="num_hidden_layers is 1000000, more layers than adapterkit builds"):
        Registry().for_config({**config, "num_hidden_layers": 1_000_000}, infer=True)  # refused before any build
    registry = Registry()
    spec = registry.for_config(config, infer=True)
    assert spec.declaration["config"]["max_positions"] == "max_position_embeddings"
    with pytest.raises(CheckpointError, match="max_position_embeddings is -4"):
        registry.for_config({**config, "max_position_embeddings": -4}, infer=True)  # the inferred one, re-used
