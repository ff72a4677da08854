"""The plugin registry: built-ins through entry points, declarations, published defaults, conflicts, faults."""
import re
import tokenize
from pathlib import Path

import pytest

import adapterkit
from adapterkit.errors import PluginError, SchemaError, UnknownArchitectureError
from adapterkit.arch.registry import Registry, get_registry, make_spec
from conftest import BUILTIN_ARCHS, BUILTIN_METHODS

BUILTINS = set(BUILTIN_ARCHS)
PLUGINS_DIR = Path(__file__).parents[1] / "plugins"


def test_builtins_load_through_entry_points():
    registry = get_registry()
    assert BUILTINS <= set(registry.architecture_names())
    assert not [f for f in registry.faults if f.distribution == "adapterkit"]
    for plugin in registry.plugins:
        if plugin.name in BUILTINS:
            assert (plugin.distribution, plugin.version) == ("adapterkit", adapterkit.__version__)
    assert {m.upper() for m in BUILTIN_METHODS} <= set(registry.methods)  # keyed as matched: case-insensitively


# Every built-in architecture has a row (tests/test_sync.py checks).
MATCHING_CONFIGS = [
    ({"model_type": "gpt2"}, "gpt2"),
    ({"model_type": "gptj"}, "gptj"),
    ({"model_type": "gpt_neox"}, "gpt_neox"),
    ({"model_type": "llama"}, "llama"),
    ({"model_type": "chatglm", "architectures": ["ChatGLMModel"]}, "chatglm3"),
    ({"architectures": ["LlamaForCausalLM"]}, "llama"),
    ({"model_type": "qwen2"}, "qwen2"),
    ({"model_type": "gemma3_text"}, "gemma3"),
    ({"architectures": ["MistralForCausalLM"]}, "mistral"),
    ({"model_type": "qwen2_moe"}, "qwen2_moe"),
    ({"model_type": "ministral"}, "ministral"),
    ({"architectures": ["Qwen3ForCausalLM"]}, "qwen3"),
    ({"model_type": "olmo2"}, "olmo2"),
    ({"model_type": "gemma"}, "gemma"),
    ({"model_type": "gemma2"}, "gemma2"),
    ({"model_type": "phi3"}, "phi3"),
    ({"model_type": "gpt_neo"}, "gpt_neo"),
    ({"architectures": ["OPTForCausalLM"]}, "opt"),
    ({"model_type": "falcon"}, "falcon"),
    ({"model_type": "bloom"}, "bloom"),
]


@pytest.mark.parametrize("config, arch", MATCHING_CONFIGS)
def test_config_matches_its_declaration(config, arch):
    assert get_registry().for_config(config).name == arch


# Published layer choices at the reference depths (ROME, MEMIT, EasyEdit hparams files).
PUBLISHED = [
    ("gpt2", {"n_layer": 48}, "rome", [17]),
    ("gpt2", {"n_layer": 48}, "memit", [13, 14, 15, 16, 17]),
    ("gptj", {"n_layer": 28}, "rome", [5]),
    ("gptj", {"n_layer": 28}, "memit", [3, 4, 5, 6, 7, 8]),
    ("llama", {"num_hidden_layers": 32}, "rome", [5]),
    ("llama", {"num_hidden_layers": 32}, "memit", [4, 5, 6, 7, 8]),
    ("chatglm3", {"num_layers": 28}, "rome", [5]),
    ("gpt_neox", {"num_hidden_layers": 44}, "rome", [15]),
    ("qwen2", {"num_hidden_layers": 28}, "rome", [5]),
    ("qwen2", {"num_hidden_layers": 28}, "memit", [4, 5, 6, 7, 8]),
    ("mistral", {"num_hidden_layers": 32}, "rome", [5]),
    ("mistral", {"num_hidden_layers": 32}, "memit", [4, 5, 6, 7, 8]),
]


@pytest.mark.parametrize("arch, config, method, layers", PUBLISHED)
def test_default_layers_reproduce_published_choices(arch, config, method, layers):
    spec = get_registry().architecture(arch)
    rule = spec.method_defaults(method)["layers"]
    assert spec.resolve_layers(rule, spec.num_layers(config)) == layers


@pytest.mark.parametrize("arch", sorted(BUILTINS))
def test_mend_defaults_are_last_three_mlp_layers(arch):
    spec = get_registry().architecture(arch)
    names = spec.inner_params(spec.method_defaults("mend")["inner_params"], 12)
    assert {int(re.search(r"\.(\d+)\.", n).group(1)) for n in names} == {9, 10, 11}
    assert any(n == spec.weight_name("mlp_out", 11) for n in names)
    assert any(n == spec.weight_name("mlp_in", 11) for n in names)


def test_layer_rules_stay_inside_small_models():
    spec = get_registry().architecture("gpt2")
    for depth in range(1, 6):
        for method in ("rome", "memit"):
            layers = spec.resolve_layers(spec.method_defaults(method)["layers"], depth)
            assert layers and all(0 <= layer < depth for layer in layers)


def _declaration(name="toy", model_type="toy_type", priority=0):
    declaration = make_spec(PLUGINS_DIR / "llama.yaml").declaration
    return {**declaration, "name": name, "match": {"model_types": [model_type]}, "priority": priority}


class _Plugin:
    def __init__(self, declaration=None, fail=False):
        self.declaration, self.fail = declaration, fail

    @adapterkit.hookimpl
    def register_architectures(self, register):
        if self.fail:
            raise RuntimeError("boom while registering")
        register(self.declaration)


def test_two_plugins_claiming_one_model_type_conflict_naming_both_distributions():
    registry = Registry()
    registry.add_plugin(_Plugin(_declaration("first")), "first", "dist-one", "1.0")
    registry.add_plugin(_Plugin(_declaration("second")), "second", "dist-two", "2.0")
    with pytest.raises(PluginError) as err:
        registry.for_config({"model_type": "toy_type"})
    assert "dist-one 1.0" in str(err.value) and "dist-two 2.0" in str(err.value)
    assert "priority" in err.value.fix


def test_priority_resolves_a_conflict():
    registry = Registry()
    registry.add_plugin(_Plugin(_declaration("first")), "first", "dist-one", "1.0")
    registry.add_plugin(_Plugin(_declaration("second", priority=10)), "second", "dist-two", "2.0")
    assert registry.for_config({"model_type": "toy_type"}).name == "second"


def test_a_failing_plugin_is_reported_and_the_others_still_work():
    registry = Registry()
    registry.add_plugin(_Plugin(fail=True), "broken", "broken-dist", "0.1")
    registry.add_plugin(_Plugin(_declaration("fine")), "fine", "fine-dist", "1.0")
    assert [(f.name, f.distribution) for f in registry.faults] == [("broken", "broken-dist")]
    assert "boom while registering" in registry.faults[0].error
    assert registry.for_config({"model_type": "toy_type"}).name == "fine"


def test_an_invalid_declaration_is_a_fault_with_its_json_pointer():
    declaration = _declaration("bad")
    declaration["modules"] = {**declaration["modules"], "layer": {**declaration["modules"]["layer"], "mlp_out": "mlp.{}.down"}}
    registry = Registry()
    registry.add_plugin(_Plugin(declaration), "bad", "bad-dist", "0.1")
    assert registry.faults and "/modules/layer/mlp_out" in registry.faults[0].error


def test_schema_errors_name_file_pointer_and_fix(tmp_path):
    path = tmp_path / "broken.yaml"
    text = (PLUGINS_DIR / "gpt2.yaml").read_text().replace("weight_layout: conv1d", "weight_layout: conv2d")
    path.write_text(text.replace("norm: layernorm", "norm: batchnorm"))
    with pytest.raises(SchemaError) as err:
        make_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "#/weight_layout" in message and "#/norm" in message
    assert "fix: use one of ['linear', 'conv1d']" in message


def test_unknown_architecture_lists_registered_ones_and_how_to_add():
    with pytest.raises(UnknownArchitectureError) as err:
        get_registry().for_config({"model_type": "mamba"}, source="ckpt/config.json")
    assert "ckpt/config.json" in str(err.value) and "'mamba'" in str(err.value)
    assert all(name in str(err.value) for name in BUILTINS)
    assert "CONTRIBUTING.md" in err.value.fix


ARCH_WORDS = re.compile(r"\b(gpt-?2|gpt-?j|gpt_?neox|neox|llama|chatglm\d?|glm|qwen\d?|opt|mistral|falcon|bloom)\b", re.I)


def test_the_core_never_names_an_architecture():
    core = Path(adapterkit.__file__).parent
    offenders = []
    for source in sorted(core.rglob("*.py")):
        with open(source, "rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                if token.type in (tokenize.STRING, tokenize.NAME, tokenize.COMMENT) and ARCH_WORDS.search(token.string):
                    offenders.append(f"{source.relative_to(core)}:{token.start[0]}: {token.string[:60]}")
    assert not offenders, "the editing core names architectures:\n" + "\n".join(offenders)


# --- methods from plugins ---------------------------------------------------------------------------
class _MethodPlugin:
    def __init__(self, method):
        self.method = method

    @adapterkit.hookimpl
    def register_methods(self, register):
        register(self.method)


def _twin():
    from adapterkit.methods import EditMethod, MethodSettings

    class Twin(EditMethod):
        name, schema, settings_class = "TWIN", {"type": "object"}, MethodSettings

        def apply(self, model, tok, requests, settings, *, spec, ledger, archive=None):
            return None
    return Twin()


def test_two_plugins_registering_one_method_name_conflict_naming_both_distributions():
    registry = Registry()
    registry.add_plugin(_MethodPlugin(_twin()), "one", "dist-one", "1.0")
    registry.add_plugin(_MethodPlugin(_twin()), "two", "dist-two", "2.0")
    with pytest.raises(PluginError) as err:
        registry.method("twin")
    assert "dist-one 1.0" in err.value.message and "dist-two 2.0" in err.value.message
    assert "uninstall one" in err.value.fix
    assert [(f.name, f.distribution) for f in registry.faults] == [("two", "dist-two")]
    assert "dist-one 1.0" in registry.faults[0].error


def test_a_method_that_breaks_the_contract_is_a_fault():
    class NotAMethod:
        name = "LOOSE"

        def apply(self, *args, **kwargs):
            return None
    registry = Registry()
    registry.add_plugin(_MethodPlugin(NotAMethod()), "loose", "loose-dist", "0.1")
    assert "not an adapterkit.methods.EditMethod" in registry.faults[0].error
    unreadable = _twin()
    unreadable.schema = Path("/nowhere/twin.schema.json")
    registry.add_plugin(_MethodPlugin(unreadable), "unreadable", "unreadable-dist", "0.1")
    assert "cannot read the schema" in registry.faults[1].error
    assert "LOOSE" not in registry.methods and "TWIN" not in registry.methods


def test_a_lazy_method_that_breaks_the_contract_is_a_fault_when_first_used():
    from adapterkit.arch.registry import LazyMethod

    registry = Registry()
    registry.add_plugin(_MethodPlugin(LazyMethod("LOOSE", "collections:OrderedDict")), "loose", "loose-dist", "0.1")
    assert "LOOSE" in registry.methods and not registry.faults  # nothing imported yet
    with pytest.raises(PluginError) as err:
        registry.method("loose")
    assert "not an adapterkit.methods.EditMethod" in err.value.message
    assert [(f.name, f.distribution) for f in registry.faults] == [("loose", "loose-dist")]
    assert "LOOSE" not in registry.methods
    registry.add_plugin(_MethodPlugin(LazyMethod("GONE", "no_such_module_here:Method")), "gone", "gone-dist", "0.1")
    with pytest.raises(PluginError, match="could not be built"):
        registry.method("gone")


def test_a_lazy_method_is_built_as_its_description_says_or_is_a_fault():
    from adapterkit.methods import LocateThenEditMethod, described
    from adapterkit.settings.methods import PMETSettings
    from adapterkit.arch.registry import LazyMethod

    class Unrelated(LocateThenEditMethod):  # PMET's attributes, but not the class PMET subclasses
        name, schema, settings_class = "PMET", "pmet", PMETSettings

    registry = Registry()
    registry.add_plugin(_MethodPlugin(LazyMethod("ROME", "adapterkit.methods.rome:ROME", description=described.MEMIT)),
                        "misnamed", "misnamed-dist", "0.1")
    assert "its description names the method 'MEMIT'" in registry.faults[0].error and "ROME" not in registry.methods
    registry.add_plugin(_MethodPlugin(LazyMethod("PMET", "adapterkit.methods.pmet:PMET", description=Unrelated)),
                        "unrelated", "unrelated-dist", "0.1")
    assert registry.method_description("pmet") is Unrelated
    with pytest.raises(PluginError, match="the description it was registered with"):
        registry.method("pmet")
    assert [f.name for f in registry.faults] == ["misnamed", "unrelated"] and "PMET" not in registry.methods


@pytest.mark.parametrize("arch", sorted(BUILTINS))
def test_pmet_takes_memits_shape_rules_and_no_declaration_repeats_them(arch):
    spec = get_registry().architecture(arch)
    pmet = get_registry().method("PMET")
    assert "pmet" not in spec.declaration["defaults"]
    memit = spec.method_defaults("memit")
    assert spec.method_defaults("pmet", pmet.layer_rules_from) == {
        key: memit[key] for key in ("layers", "mom2_update_weight") if key in memit}


# --- two distributions declaring one architecture name ------------------------------------------------
def _fake_distribution(site: Path, module: str, dist: str, version: str, declarations: list) -> None:
    """An installed distribution as importlib.metadata finds it: a dist-info with an adapterkit entry point."""
    import yaml

    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[adapterkit]\n{module} = {module}\n")
    for i, declaration in enumerate(declarations):
        (site / f"{module}_{i}.yaml").write_text(yaml.safe_dump(declaration))
    (site / f"{module}.py").write_text(
        "from pathlib import Path\nfrom adapterkit import hookimpl\n\n@hookimpl\ndef register_architectures(register):\n"
        f"    for i in range({len(declarations)}):\n        register(Path(__file__).with_name(f'{module}_{{i}}.yaml'))\n")


@pytest.fixture
def clashing_site(tmp_path, monkeypatch):
    """fake-one and fake-two both declare `clasharch`; fake-two also declares `gpt2`, at a priority that would win."""
    site = tmp_path / "site"
    _fake_distribution(site, "clash_one", "fake-one", "1.0", [_declaration("clasharch", "clash_one_type")])
    _fake_distribution(site, "clash_two", "fake-two", "2.0",
                       [_declaration("clasharch", "clash_two_type"), _declaration("gpt2", "gpt2", priority=5)])
    monkeypatch.syspath_prepend(str(site))
    return site


def test_two_distributions_declaring_one_architecture_name_is_a_fault_naming_both(clashing_site):
    registry = Registry().load_entry_points()
    errors = [f.error for f in registry.faults]
    assert any("'clasharch'" in e and "fake-one 1.0" in e and "fake-two 2.0" in e for e in errors), errors
    assert any("'gpt2'" in e and f"adapterkit {adapterkit.__version__}" in e and "fake-two 2.0" in e for e in errors), errors
    for use in (lambda: registry.architecture("clasharch"), lambda: registry.for_config({"model_type": "clash_two_type"})):
        with pytest.raises(PluginError) as err:
            use()
        assert "fake-one 1.0" in err.value.message and "fake-two 2.0" in err.value.message and "uninstall one" in err.value.fix
    with pytest.raises(PluginError, match="'gpt2' is declared by several plugins"):
        registry.for_config({"model_type": "gpt2"}, source="ckpt/config.json")  # the higher priority does not win silently
    assert registry.for_config({"model_type": "llama"}).name == "llama"  # the others still work


def test_plugins_strict_reports_an_architecture_name_clash(clashing_site):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(clashing_site), os.environ.get("PYTHONPATH", "")])}
    strict = subprocess.run([sys.executable, "-m", "adapterkit", "plugins", "--strict"], capture_output=True, text=True, env=env)
    assert strict.returncode == 1, strict.stderr
    assert "architecture 'clasharch' is declared by fake-one 1.0 (plugin clash_one) and by fake-two 2.0 (plugin clash_two)" in strict.stdout
    lenient = subprocess.run([sys.executable, "-m", "adapterkit", "plugins"], capture_output=True, text=True, env=env)
    assert lenient.returncode == 0 and "CONFLICT: architecture 'clasharch'" in lenient.stdout
    assert "FAILED TO LOAD" not in lenient.stdout  # both plugins loaded; they name one architecture
