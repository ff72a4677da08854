"""Method hyperparameters: the schemas' shared parts, the typed settings built from them, and their agreement."""
import pytest

from adapterkit.schema import load_schema, schema_problems

LOCATE_THEN_EDIT = ("rome", "memit", "pmet")
TRAINED = ("mend", "serac")


def locate_then_edit_hparams(**changes) -> dict:
    hp = {"alg_name": "PMET", "layers": [1], "rewrite_module_tmps": ["model.layers.{}.mlp.down_proj"],
          "layer_module_tmp": "model.layers.{}", "mlp_module_tmp": "model.layers.{}.mlp.down_proj",
          "attn_module_tmp": "model.layers.{}.self_attn.o_proj"}
    return {**hp, **changes}


# --- schemas ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shared", [*((n, "locate_then_edit") for n in LOCATE_THEN_EDIT),
                                          *((n, "trained_editor") for n in TRAINED)])
def test_method_schemas_take_their_family_s_keys_from_one_file(name, shared):
    schema, family = load_schema(name), load_schema(shared)
    assert schema["$ref"] == f"{shared}.schema.json"
    assert not set(schema["properties"]) & set(family["properties"])  # written once, in the family's file


def test_errors_found_through_a_reference_point_at_the_user_s_key():
    problems = schema_problems(locate_then_edit_hparams(v_lr="fast", rewrite_module_tmps=["model.layers.mlp"],
                                                        mom2_update_weight=-1, lm_head_module="lm head"), "pmet")
    pointers = {pointer: fix for pointer, _, fix in problems}
    assert sorted(pointers) == ["/lm_head_module", "/mom2_update_weight", "/rewrite_module_tmps/0", "/v_lr"]
    assert "'{}' where the layer index goes" in pointers["/rewrite_module_tmps/0"]  # the shared definition's fix
    assert schema_problems(locate_then_edit_hparams(), "pmet") == []
    assert [p for p, _, _ in schema_problems({"alg_name": "MEND", "inner_params": ["a.weight"], "lr": 0}, "mend")] == ["/lr"]
