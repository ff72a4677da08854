"""Family declarations (one YAML, several model types) and the built-in declarations of mainstream families."""
import pytest
import yaml

from adapterkit.errors import SchemaError
from adapterkit.arch.families import expand
from adapterkit.arch.registry import Registry, get_registry, make_spec, make_specs

from test_registry import PLUGINS_DIR, _Plugin

FAMILY = yaml.safe_load((PLUGINS_DIR / "llama_style.yaml").read_text())


def test_each_variant_is_an_architecture_with_the_familys_modules():
    specs = {s.name: s for s in make_specs(PLUGINS_DIR / "llama_style.yaml")}
    assert set(specs) == set(FAMILY["variants"])
    for spec in specs.values():
        assert spec.template("mlp_out") == "model.layers.{}.mlp.down_proj"
        assert spec.source.endswith(f"llama_style.yaml#/variants/{spec.name}")
    assert specs["gemma"].tied_lm_head and not specs["qwen2"].tied_lm_head


def test_a_variant_overrides_nested_fields_key_by_key():
    qwen2 = next(d for d, pointer in expand(FAMILY) if pointer == "/variants/qwen2")
    assert qwen2["defaults"]["rome"]["layers"] == {"at": 5, "of": 28}          # replaced whole
    assert qwen2["defaults"]["rome"]["v_num_grad_steps"] == FAMILY["defaults"]["rome"]["v_num_grad_steps"]  # kept
    assert qwen2["tiny_config"]["model_type"] == "qwen2" and qwen2["tiny_config"]["hidden_size"] == 64
    assert "variants" not in qwen2


def test_a_variant_without_a_gate_drops_the_familys_gate_role():
    family = {**FAMILY, "variants": {"plain": {"match": {"model_types": ["plain_type"]}, "gated_mlp": False,
                                               "modules": {"layer": {"mlp_in": "mlp.c_fc", "mlp_out": "mlp.c_proj"}}}}}
    spec = make_spec(family)
    assert not spec.has_role("mlp_gate") and spec.template("mlp_in") == "model.layers.{}.mlp.c_fc"
    assert spec.template("attn_out") == "model.layers.{}.self_attn.o_proj"


def test_a_variant_with_a_bad_field_is_an_error_naming_it():
    family = {**FAMILY, "variants": {"broken": {"match": {"model_types": ["x"]}, "norm": "batchnorm"}}}
    with pytest.raises(SchemaError) as err:
        make_specs(family)
    assert "#/variants/broken/norm" in str(err.value)


def test_a_family_registers_all_its_variants_from_one_plugin():
    registry = Registry()
    registry.add_plugin(_Plugin(FAMILY), "family", "family-dist", "1.0")
    assert not registry.faults
    assert registry.plugins[0].architectures == list(FAMILY["variants"])
    assert registry.for_config({"model_type": "olmo2"}).name == "olmo2"


def test_a_declaration_needs_match_or_variants():
    declaration = {k: v for k, v in make_spec(PLUGINS_DIR / "gpt2.yaml").declaration.items() if k != "match"}
    with pytest.raises(SchemaError, match="match"):
        make_spec(declaration)


def test_the_shared_expert_of_a_mixture_of_experts_is_what_edits_rewrite():
    spec = get_registry().architecture("qwen2_moe")
    assert spec.declaration["mixture_of_experts"] == "shared_expert"
    assert spec.template("mlp_out") == "model.layers.{}.mlp.shared_expert.down_proj"
    assert spec.template("mlp") == "model.layers.{}.mlp.shared_expert"


def test_modules_that_add_the_residual_themselves_are_declared_by_their_projection():
    """BLOOM's MLP returns residual + projection: ROME's value point must be the projection's output."""
    spec = get_registry().architecture("bloom")
    assert spec.template("mlp") == spec.template("mlp_out") == "transformer.h.{}.mlp.dense_4h_to_h"


def test_validate_flags_a_value_point_that_adds_the_residual(tmp_path):
    from adapterkit.arch.validate import validate_file

    bad = tmp_path / "bloom.yaml"
    bad.write_text((PLUGINS_DIR / "bloom.yaml").read_text().replace("    mlp: mlp.dense_4h_to_h", "    mlp: mlp"))
    report = validate_file(bad)
    assert "#/modules/layer/mlp" in report and "residual" in report and "declare mlp: mlp.dense_4h_to_h" in report
