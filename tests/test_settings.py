"""Method hyperparameters: the schemas' shared parts, the typed settings built from them, and their agreement."""
import dataclasses
import types
import typing

import pytest

from adapterkit.settings.methods import PUBLISHED
from adapterkit.arch.schema import load_schema, schema_problems, schema_properties

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


# --- settings and schemas agree -------------------------------------------------------------------
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object",
              type(None): "null"}


def python_types(hint) -> set[str]:
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {JSON_TYPES[typing.get_origin(m) or m] for m in members}


def schema_types(prop: dict) -> set[str] | None:
    if "type" in prop:
        return set([prop["type"]] if isinstance(prop["type"], str) else prop["type"])
    if "enum" in prop:
        return {JSON_TYPES[type(v)] for v in prop["enum"]}
    return None


def method_settings():
    from adapterkit.arch.registry import get_registry

    return [pytest.param(m.settings_class, m.schema, id=m.name) for m in get_registry().methods.values()]


@pytest.mark.parametrize("settings_class, schema", method_settings())
def test_settings_classes_and_schemas_agree(settings_class, schema):
    properties, required = schema_properties(schema)
    fields = {f.name: f for f in dataclasses.fields(settings_class) if f.name != "extra"}
    hints = typing.get_type_hints(settings_class)
    deliberate = set(settings_class.ignored) | set(settings_class.aliases)
    assert not deliberate & set(fields)
    assert set(properties) - set(fields) <= deliberate, "schema keys that are neither settings nor deliberately extra"
    assert set(fields) - set(properties) == set(), "settings the schema does not describe"
    assert set(deliberate) <= set(properties)
    assert sorted(required) == sorted(settings_class.required())
    for name, f in fields.items():
        allowed = schema_types(properties[name])
        types_ = python_types(hints[name])
        if allowed is not None and f.default is None and not f.metadata.get(PUBLISHED):
            types_, allowed = types_ - {"null"}, allowed - {"null"}  # None is "not set": to_dict leaves the key out
        if allowed is not None:
            assert types_ == allowed, name
        if "default" in properties[name]:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert properties[name]["default"] == default, name


@pytest.mark.parametrize("settings_class, schema", method_settings())
def test_published_defaults_pass_the_schema_and_round_trip(settings_class, schema):
    hp = {**minimal_hparams(settings_class, schema), **settings_class.published_defaults()}
    assert schema_problems(hp, schema) == []
    settings = settings_class.from_hparams({**hp, "an_easyedit_key": [1]})
    assert settings.extra == {"an_easyedit_key": [1]}
    written = settings.to_dict()
    assert schema_problems(written, schema) == []
    assert settings_class.from_hparams(written) == settings
    assert written["an_easyedit_key"] == [1]


def minimal_hparams(settings_class, schema) -> dict:
    """Values for the required keys that pass the schema."""
    examples = {"alg_name": settings_class.__name__.removesuffix("Settings"), "layers": [1],
                "inner_params": ["model.layers.1.mlp.down_proj.weight"], "rewrite_module_tmps": ["model.layers.{}.mlp"]}
    properties, required = schema_properties(schema)
    return {k: examples.get(k, "model.layers.{}.mlp") for k in required}


# --- building settings once ---------------------------------------------------------------------
def test_settings_are_built_once_and_checked_when_given_built():
    from adapterkit.errors import SchemaError
    from adapterkit.settings.hparams import load_settings
    from adapterkit.settings.methods import MENDSettings, PMETSettings

    settings = load_settings(locate_then_edit_hparams(val_interval=5))
    assert isinstance(settings, PMETSettings) and settings.extra == {"val_interval": 5}
    assert settings.clamp_norm_factor == 1.0 and isinstance(settings.clamp_norm_factor, float)
    assert load_settings(settings) is settings
    with pytest.raises(SchemaError, match="#/v_lr"):
        load_settings(settings.replace(v_lr=-1.0))
    with pytest.raises(SchemaError, match="takes PMETSettings"):
        load_settings(MENDSettings(alg_name="PMET", inner_params=["a.weight"]))
    mend = load_settings({"alg_name": "MEND", "inner_params": ["a.weight"], "val_interval": 7})
    assert mend.val_every == 7 and "val_interval" not in mend.to_dict()  # EasyEdit's name for val_every
