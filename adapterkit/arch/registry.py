"""The plugin manager: entry points, declarations, methods, matching a config to a declaration."""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import pluggy

from . import hookspecs
from ..errors import AdapterkitError, PluginError, SchemaError, UnknownArchitectureError
from .config_checks import check_config_counts, check_config_values
from ..files.safe_load import load_yaml
from .schema import load_schema, validate
from .spec import ArchSpec

ENTRY_POINT_GROUP = "adapterkit"
HOW_TO_ADD = ("write a plugin (see CONTRIBUTING.md): a YAML declaration registered through the "
              "'adapterkit' entry-point group, then `pip install` it; `adapterkit plugins` lists what is loaded. "
              "For a model type transformers knows, `adapterkit detect` (or load_model) infers a declaration")


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    architectures: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass
class PluginFault:
    """A plugin that failed to load (``kind`` "load") or that loaded but names what another plugin names ("conflict")."""
    name: str
    distribution: str
    error: str
    kind: str = "load"


class LazyMethod:
    """A method registered by its import path (``package.module:Class``) and built on first use, so that listing
    plugins (or anything else that only needs the method's name) does not import torch. ``description``: a
    torch-free EditMethod subclass holding the class attributes, which ``Class`` subclasses; detect and validate
    read it instead of building the method (Registry.method_description). The method contract (check_method) is
    checked when it is built; a method that breaks it is a PluginError then."""

    def __init__(self, name: str, target: str, description: type | None = None):
        self.name, self.target, self.description, self._method = name, target, description, None
        self.plugin, self.distribution = "?", "?"  # set when a plugin registers it

    def load(self):
        if self._method is None:
            module, _, cls = self.target.partition(":")
            try:
                method = getattr(importlib.import_module(module), cls)()
            except Exception as exc:
                raise PluginError(f"method {self.name!r} ({self.target}) could not be built: {type(exc).__name__}: {exc}",
                                  fix="reinstall the plugin that registers it (`adapterkit plugins` names it)") from exc
            check_method(method)
            if method.name.upper() != self.name.upper():
                raise PluginError(f"method {self.name!r} ({self.target}) builds a method named {method.name!r}",
                                  fix="register the lazy method under the name its class sets")
            if self.description is not None and not isinstance(method, self.description):
                raise PluginError(f"method {self.name!r} ({self.target}) is no {self.description.__qualname__}, "
                                  "the description it was registered with",
                                  fix="subclass the description, so that what detect reads is what edits")
            method.distribution = self.distribution
            self._method = method
        return self._method

    def __getattr__(self, attr):
        if attr.startswith("__") or attr == "_method":
            raise AttributeError(attr)
        return getattr(self.load(), attr)


def load_declaration(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict, str]:
    """A declaration dict and a name for it in messages (its file path, when it has one)."""
    if isinstance(source, Mapping):
        return dict(source), "<dict>"
    path = Path(source)
    document = load_yaml(path, error=SchemaError, what="plugin declaration")
    if not isinstance(document, dict):
        raise SchemaError(f"{path}: a declaration is a YAML mapping, found {type(document).__name__}",
                          fix="start from a built-in declaration (plugins/*.yaml); CONTRIBUTING.md explains each field")
    return document, str(path)


def make_spec(source, *, plugin="?", distribution="?", version="?") -> ArchSpec:
    specs = make_specs(source, plugin=plugin, distribution=distribution, version=version)
    if len(specs) != 1:
        raise SchemaError(f"{specs[0].source}: a family declaration stands for {len(specs)} architectures",
                          fix="use make_specs for a declaration with variants")
    return specs[0]


def make_specs(source, *, plugin="?", distribution="?", version="?") -> list[ArchSpec]:
    """One ArchSpec per architecture the declaration stands for (each variant of a family declaration)."""
    from .families import expand

    declaration, where = load_declaration(source)
    validate(declaration, "architecture", where)
    specs = []
    for expanded, pointer in expand(declaration):
        validate(expanded, "architecture", f"{where}#{pointer}" if pointer else where)
        specs.append(ArchSpec(expanded, source=f"{where}#{pointer}" if pointer else where,
                              plugin=plugin, distribution=distribution, version=version))
    return specs


COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
BUILTIN_DISTRIBUTION = "adapterkit"


def check_command(command) -> None:
    """Refuse (PluginError) a registered command that is no ``adapterkit.cli.Command``-shaped object."""
    name = getattr(command, "name", None)
    if not isinstance(name, str) or not COMMAND_NAME.match(name):
        raise PluginError(f"command {name!r}: a command's name is lower-case letters, digits and '-'",
                          fix="register adapterkit.cli.Command(name, run, arguments, help=...)")
    for attribute in ("run", "arguments"):
        if not callable(getattr(command, attribute, None)):
            raise PluginError(f"command {name!r} has no callable {attribute}",
                              fix="register adapterkit.cli.Command(name, run, arguments, help=...)")


def check_method(method) -> None:
    """Refuse (PluginError) a registered method that does not fulfil the contract of adapterkit.methods.EditMethod."""
    from ..methods import EditMethod

    what = f"method {getattr(method, 'name', type(method).__name__)!r}"
    if isinstance(method, LazyMethod):  # the rest is checked when it is built (LazyMethod.load)
        if not isinstance(method.name, str) or not method.name:
            raise PluginError(f"{what} has no name", fix="give LazyMethod the alg_name the method answers to")
        if method.description is not None:
            if not (isinstance(method.description, type) and issubclass(method.description, EditMethod)):
                raise PluginError(f"{what}: its description is no adapterkit.methods.EditMethod subclass",
                                  fix="describe it by a torch-free EditMethod subclass holding its class attributes")
            _check_class_attributes(method.description, what)
            if method.description.name.upper() != method.name.upper():
                raise PluginError(f"{what}: its description names the method {method.description.name!r}",
                                  fix="register the lazy method under the name its description sets")
        return
    if not isinstance(method, EditMethod):
        raise PluginError(f"{what} is a {type(method).__name__}, not an adapterkit.methods.EditMethod",
                          fix="subclass adapterkit.methods.EditMethod (or LocateThenEditMethod / TrainedEditMethod) "
                              "and register an instance")
    _check_class_attributes(method, what)


def _check_class_attributes(method, what: str) -> None:
    """name, settings_class and schema, on a method or on the class that describes it."""
    from ..methods import MethodSettings

    if not isinstance(getattr(method, "name", None), str) or not method.name:
        raise PluginError(f"{what} has no name", fix="set the class attribute `name` to the alg_name it answers to")
    settings_class = getattr(method, "settings_class", None)
    if not (isinstance(settings_class, type) and issubclass(settings_class, MethodSettings)):
        raise PluginError(f"{what} has no settings_class", fix="set `settings_class` to a subclass of adapterkit.methods.MethodSettings")
    load_schema(method.schema)  # a schema that cannot be read is the plugin's fault, found now rather than at the first edit


class Registry:
    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.architectures: list[ArchSpec] = []
        self.methods: dict[str, Any] = {}
        self.commands: dict[str, Any] = {}  # name -> adapterkit.cli.Command, built-ins first
        self.command_origins: dict[str, str] = {}
        self.method_origins: dict[str, str] = {}     # NAME -> "distribution version (plugin name)"
        self.method_clashes: dict[str, list[str]] = {}
        self.architecture_origins: dict[str, str] = {}  # name -> "distribution version (plugin name)"
        self.architecture_clashes: dict[str, list[str]] = {}
        self.plugins: list[PluginInfo] = []
        self.faults: list[PluginFault] = []
        self.inferred: list[ArchSpec] = []  # declarations inferred on request (detect, validate, load_model)

    # --- loading ------------------------------------------------------------------------------
    def load_entry_points(self) -> "Registry":
        for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(entry_point, "dist", None)
            dist_name, version = (dist.name, dist.version) if dist else ("?", "?")
            try:
                plugin = entry_point.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.faults.append(PluginFault(entry_point.name, dist_name, f"import failed: {type(exc).__name__}: {exc}"))
                continue
            self.add_plugin(plugin, entry_point.name, dist_name, version)
        return self

    def add_plugin(self, plugin, name: str, distribution: str = "?", version: str = "?") -> None:
        """Register one plugin object or module, collecting what its hooks hand over."""
        if self.pm.is_registered(plugin) or self.pm.has_plugin(name):
            return
        info = PluginInfo(name, distribution, version)
        specs, methods, commands = [], [], []
        try:
            self.pm.register(plugin, name=name)
            for hook, collected in ((self.pm.hook.register_architectures, specs), (self.pm.hook.register_methods, methods),
                                    (self.pm.hook.register_commands, commands)):
                for impl in hook.get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=collected.append)
            built = [a for s in specs for a in make_specs(s, plugin=name, distribution=distribution, version=version)]
            for method in methods:
                check_method(method)
            for command in commands:
                check_command(command)
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            message = exc.message if isinstance(exc, AdapterkitError) else f"{type(exc).__name__}: {exc}"
            self.faults.append(PluginFault(name, distribution, message))
            return
        origin = f"{distribution} {version} (plugin {name})"
        for spec in built:
            if spec.name in self.architecture_origins:
                self.architecture_clashes.setdefault(spec.name, [self.architecture_origins[spec.name]]).append(origin)
                self.faults.append(PluginFault(name, distribution, f"architecture {spec.name!r} is declared by "
                                               + " and by ".join(self.architecture_clashes[spec.name]), "conflict"))
            else:
                self.architecture_origins[spec.name] = origin
            self.architectures.append(spec)
            info.architectures.append(spec.name)
        for method in methods:
            key = method.name.upper()
            if key in self.methods:
                self.method_clashes.setdefault(key, [self.method_origins[key]]).append(origin)
                self.faults.append(PluginFault(name, distribution, f"method {method.name!r} is registered by "
                                               + " and by ".join(self.method_clashes[key]), "conflict"))
                continue
            method.distribution = distribution
            if isinstance(method, LazyMethod):
                method.plugin = name
            self.methods[key] = method
            self.method_origins[key] = origin
            info.methods.append(method.name)
        for command in commands:
            self._add_command(command, origin, name, distribution, info)
        self.plugins.append(info)

    def _add_command(self, command, origin: str, plugin: str, distribution: str, info: "PluginInfo") -> None:
        """adapterkit's own command keeps its name against a plugin's; between plugins, the first registered keeps it."""
        held = self.command_origins.get(command.name)
        if held is not None:
            replaces = distribution == BUILTIN_DISTRIBUTION and not held.startswith(f"{BUILTIN_DISTRIBUTION} ")
            keeper = origin if replaces else held
            self.faults.append(PluginFault(plugin, distribution, f"command {command.name!r} is registered by {held} "
                                           f"and by {origin}; {keeper} keeps it", "command conflict"))
            if not replaces:
                return
        self.commands[command.name] = command
        self.command_origins[command.name] = origin
        info.commands.append(command.name)

    def command_list(self) -> list:
        """The commands in the order --help lists them: adapterkit's own first, in their order, then the plugins'."""
        own = f"{BUILTIN_DISTRIBUTION} "
        return sorted(self.commands.values(), key=lambda c: not self.command_origins[c.name].startswith(own))

    # --- look-ups -----------------------------------------------------------------------------
    def architecture(self, name: str) -> ArchSpec:
        self._refuse_clash(name)
        for spec in self.architectures:
            if spec.name == name:
                return spec
        raise UnknownArchitectureError(
            f"no plugin declares an architecture named {name!r}; registered: {self.architecture_names()}",
            fix=HOW_TO_ADD)

    def architecture_names(self) -> list[str]:
        return sorted(s.name for s in self.architectures)

    def for_config(self, config: Mapping[str, Any], source: str = "config.json", *, infer: bool = False) -> ArchSpec:
        """The one declaration that claims this config, or a clear error.

        With no plugin for it: a declaration inferred earlier in this process, or with ``infer`` one inferred now
        from the model transformers builds for the config (callers that read a checkpoint ask; ``edit`` never does).
        """
        candidates = [s for s in self.architectures if s.matches(config)]
        if not candidates:
            inferred = [s for s in self.inferred if s.matches(config)]
            if inferred or infer:
                spec = inferred[0] if inferred else self.infer(config, source)
                check_config_values(config, spec, source)
                return spec
            found = config.get("model_type"), config.get("architectures")
            raise UnknownArchitectureError(
                f"{source}: no plugin declares model_type={found[0]!r} / architectures={found[1]!r}; "
                f"registered architectures: {', '.join(self.architecture_names()) or 'none'}"
                + self._fault_hint(),
                fix=HOW_TO_ADD)
        best = max(s.priority for s in candidates)
        winners = [s for s in candidates if s.priority == best]
        if len(winners) > 1:
            names = ", ".join(f"{s.name!r} from {s.distribution} {s.version}" for s in winners)
            raise PluginError(
                f"{source}: model_type={config.get('model_type')!r} is claimed by several plugins: {names}",
                fix="uninstall one of them, or give one declaration a higher `priority`")
        self._refuse_clash(winners[0].name, source)
        check_config_values(config, winners[0], source)
        return winners[0]

    def _refuse_clash(self, name: str, source: str | None = None) -> None:
        clash = self.architecture_clashes.get(name)
        if clash:
            where = f"{source}: " if source else ""
            raise PluginError(f"{where}the architecture {name!r} is declared by several plugins: {' and '.join(clash)}",
                              fix="uninstall one of them, or rename the architecture in one declaration "
                                  "(`adapterkit plugins --strict` lists such conflicts)")

    def infer(self, config: Mapping[str, Any], source: str = "config.json") -> ArchSpec:
        from .inference import DEPTH_KEYS, infer

        check_config_counts(config, {"num_layers": list(DEPTH_KEYS)}, source, "inference")  # before building it
        inference = infer(config)
        declaration = inference.declaration
        validate(declaration, "architecture", f"the declaration inferred for {source}")
        spec = ArchSpec(declaration, source=f"inferred from {source}", plugin="inferred",
                        distribution="adapterkit (inferred)", version="-", extras={"inference": inference})
        self.inferred.append(spec)
        return spec

    def for_model(self, model) -> ArchSpec:
        config = getattr(model, "config", None)
        if config is None:
            raise AdapterkitError("the model has no .config; adapterkit needs a transformers-style model")
        return self.for_config({"model_type": getattr(config, "model_type", None),
                                "architectures": getattr(config, "architectures", None) or [type(model).__name__]},
                               source=f"{type(model).__name__}.config")

    def method_description(self, name: str):
        """What detect, validate and the hyperparameter checks read of a method: its class attributes and
        ``settings``. A method registered lazily with a description answers with that, unbuilt (no torch);
        any other is built, as ``method`` builds it."""
        method = self._registered_method(name)
        if isinstance(method, LazyMethod) and method.description is not None:
            return method.description
        return self.method(name)

    def method(self, name: str):
        method = self._registered_method(name)
        if isinstance(method, LazyMethod):
            try:
                method = method.load()
            except PluginError as exc:  # the same fault a method breaking the contract at registration gives
                del self.methods[name.upper()]
                self.faults.append(PluginFault(method.plugin, method.distribution, exc.message))
                raise
        return method

    def _registered_method(self, name: str):
        clash = self.method_clashes.get(name.upper())
        if clash:
            raise PluginError(f"the editing method {name!r} is registered by several plugins: {' and '.join(clash)}",
                              fix="uninstall one of them (`adapterkit plugins` lists what is loaded)")
        try:
            return self.methods[name.upper()]
        except KeyError:
            raise AdapterkitError(
                f"no editing method named {name!r}; registered: {', '.join(sorted(self.methods)) or 'none'}",
                fix="set alg_name to one of those, or install the plugin that provides it") from None

    def _fault_hint(self) -> str:
        if not self.faults:
            return ""
        return " (plugins that failed to load: " + ", ".join(f"{f.name} [{f.distribution}]" for f in self.faults) + ")"


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _registry
    if _registry is None:
        _registry = Registry().load_entry_points()
    return _registry
