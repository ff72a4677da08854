"""`adapterkit conformance`: does an architecture declaration hold up on a real model, end to end?

Each check is one row of a report: the declaration validates; its templates, weight layout, norm type and lm-head
agree with a tiny model instantiated from it; every editing method edits a tiny model trained on a few facts
(efficacy, generalisation and locality measured); an edit restores bit for bit; saved deltas replay on a fresh
model. The target is a plugin distribution directory (pyproject.toml and a declaration YAML), a declaration file,
or a checkpoint directory (its plugin's declaration, or the one inferred as `detect` does).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import AdapterkitError, SchemaError

METHODS = ("ROME", "MEMIT", "PMET", "MEND", "SERAC")
PASS, FAIL, SKIP = "pass", "fail", "skip"
STRUCTURE_ROWS = ("templates", "weight layout", "norm", "lm head")  # no fact model is trained until these pass


@dataclass(frozen=True)
class ConformanceSettings:
    """How big the trained fact model and the editors are: small enough for a minute or two on 2 CPU cores.

    ``n_facts`` CounterFact records are learnt; the edits are those among them whose new target is an answer the
    model gives elsewhere (with 12 records: 4 edits), so the target is a word the model can say at all.
    """

    methods: tuple[str, ...] = METHODS
    n_facts: int = 12
    train_steps: int = 4000              # at most: training stops once the facts and the swaps are learnt
    editor_iters: int = 200
    # locate-then-edit: 3 of 4 edited prompts answer the new target. A wrong module gives none; which one edit in four
    # lands on a 12-fact model turns on the float rounding of the CPU that trained it (benchmarks/RESULTS.md)
    min_efficacy: float = 0.75
    min_trained_efficacy: float = 0.5    # MEND and SERAC: trained editors, a few hundred steps on a few dozen facts
    cache_dir: Path | None = None
    seed: int = 0

    def cache(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(root) / "adapterkit" / "conformance"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ArchitectureReport:
    architecture: str
    source: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)


@dataclass
class ConformanceReport:
    target: str
    architectures: list[ArchitectureReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.architectures) and all(a.passed for a in self.architectures)

    def to_dict(self) -> dict:
        return {"target": self.target, "passed": self.passed,
                "architectures": [{"architecture": a.architecture, "source": a.source, "passed": a.passed,
                                   "checks": [dataclasses.asdict(c) for c in a.checks]} for a in self.architectures]}

    def write_json(self, path) -> None:
        from ..files.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self) -> str:
        lines = []
        for arch in self.architectures:
            lines.append(f"conformance of {arch.architecture} ({arch.source}): {'PASSED' if arch.passed else 'FAILED'}")
            width = max(len(c.name) for c in arch.checks)
            for c in arch.checks:
                detail = c.detail.replace("\n", "\n" + " " * (width + 12))
                lines.append(f"  {c.name:<{width}}  {c.status.upper():<4}  {detail}")
        return "\n".join(lines)


# --- the target ---------------------------------------------------------------------------------
@dataclass
class _Subject:
    """One architecture to check: its spec (None when the declaration does not build one) and where it came from."""
    name: str
    source: str
    spec: Any
    tiny_config: dict | None


def run_conformance(target, settings: ConformanceSettings | None = None,
                    say: Callable[[str], None] = print) -> ConformanceReport:
    """Check the declaration(s) of ``target`` (see the module docstring); every row is run or says why not."""
    settings = settings or ConformanceSettings()
    unknown = [m for m in settings.methods if m.upper() not in METHODS]
    if unknown:
        raise AdapterkitError(f"unknown method(s) {', '.join(unknown)} for conformance",
                              fix=f"choose among {', '.join(METHODS)} (--methods rome,memit)")
    report = ConformanceReport(str(target))
    declaration_rows, subjects = _subjects(Path(target), say)
    for subject in subjects:
        arch = ArchitectureReport(subject.name, subject.source, [declaration_rows[subject.name]])
        report.architectures.append(arch)
        _check_architecture(arch, subject, settings, say)
    return report


def _subjects(target: Path, say) -> tuple[dict[str, Check], list[_Subject]]:
    if target.is_dir() and (target / "config.json").is_file():
        return _checkpoint_subject(target, say)
    if target.is_dir() and (target / "pyproject.toml").is_file():
        return _declaration_subjects(_declaration_file(target), say)
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        return _declaration_subjects(target, say)
    raise AdapterkitError(f"{target}: not a plugin distribution (pyproject.toml and a declaration YAML), a "
                          "declaration file, or a checkpoint directory (config.json)",
                          fix="give the plugin's directory, its declaration .yaml, or a local checkpoint directory")


def _declaration_file(dist: Path) -> Path:
    """The one architecture declaration a distribution ships (a YAML mapping with name, match and modules)."""
    from ..files.safe_load import load_yaml

    found = []
    for path in sorted(dist.rglob("*.y*ml")):
        if any(part.startswith(".") or part in ("build", "tests") for part in path.relative_to(dist).parts):
            continue
        with contextlib.suppress(AdapterkitError):
            document = load_yaml(path, error=SchemaError, what="declaration")
            if isinstance(document, dict) and {"name", "match", "modules"} <= document.keys():
                found.append(path)
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(dist)) for p in found) or "none"
        raise AdapterkitError(f"{dist}: conformance needs one architecture declaration in the distribution, found {listed}",
                              fix="run conformance on each declaration file (`adapterkit conformance path/to/decl.yaml`)")
    return found[0]


def _declaration_subjects(path: Path, say) -> tuple[dict[str, Check], list[_Subject]]:
    from .registry import make_specs
    from .schema import format_problems
    from .validate import declaration_problems

    say(f"[conformance] validating {path}")
    started = time.perf_counter()
    problems = declaration_problems(path)
    try:
        specs = make_specs(path, plugin="conformance", distribution=f"under test ({path})")
    except SchemaError as exc:  # the declaration builds no spec: only its validation row can say anything
        name = path.stem
        row = Check("declaration", FAIL, format_problems(str(path), problems) if problems else exc.message,
                    seconds=time.perf_counter() - started)
        return {name: row}, [_Subject(name, str(path), None, None)]
    rows = {}
    for spec in specs:
        own = [p for p in problems if _concerns(p[0], spec)]
        rows[spec.name] = (Check("declaration", FAIL, format_problems(str(path), own), seconds=time.perf_counter() - started)
                           if own else Check("declaration", PASS, "schema and semantic checks (adapterkit validate)",
                                             seconds=time.perf_counter() - started))
    return rows, [_Subject(s.name, s.source, s, s.tiny_config) for s in specs]


def _concerns(pointer: str, spec) -> bool:
    """Whether a validation problem at ``pointer`` belongs to this spec (a family's variants each have their own)."""
    if not pointer.startswith("/variants/"):
        return True
    return spec.source.endswith("#/variants/" + pointer.split("/")[2])


def _checkpoint_subject(path: Path, say) -> tuple[dict[str, Check], list[_Subject]]:
    from ..checkpoints.loading import read_config
    from .registry import get_registry
    from .schema import format_problems
    from .tinyconfig import tiny_config
    from .validate import declaration_problems

    config = read_config(path)
    spec = get_registry().for_config(config, source=str(path / "config.json"), infer=True)
    how = "inferred from the model" if spec.extras.get("inference") is not None else f"from {spec.distribution}"
    say(f"[conformance] {path}: architecture {spec.name} (declaration {how}); validating it")
    started = time.perf_counter()
    try:  # the checkpoint's own config shrunk keeps its options; the declaration's tiny_config is the fallback
        tiny = tiny_config(config["model_type"], base={k: v for k, v in config.items() if k != "architectures"})
    except AdapterkitError:
        tiny = spec.tiny_config or tiny_config(config["model_type"])
    # an inferred declaration has no tiny_config of its own: the semantic checks build the checkpoint's, shrunk
    problems = declaration_problems({**spec.declaration, "tiny_config": spec.tiny_config or tiny})
    row = (Check("declaration", FAIL, format_problems(spec.source, problems), seconds=time.perf_counter() - started)
           if problems else Check("declaration", PASS, f"schema and semantic checks (declaration {how})",
                                  seconds=time.perf_counter() - started))
    return {spec.name: row}, [_Subject(spec.name, spec.source, spec, tiny)]


# --- the checks ---------------------------------------------------------------------------------
def _check_architecture(arch: ArchitectureReport, subject: _Subject, settings: ConformanceSettings, say) -> None:
    later = ("weight layout", "norm", "lm head", *(m.upper() for m in settings.methods), "restore", "deltas round-trip")
    if subject.spec is None:
        arch.checks += [Check(name, SKIP, "the declaration does not validate") for name in ("templates", *later)]
        return
    if subject.tiny_config is None:
        arch.checks.append(Check("templates", FAIL, "no tiny_config: no model to check the templates against",
                                 fix_text("add the config.json content of a tiny model as tiny_config")))
        arch.checks += [Check(name, SKIP, "no tiny model") for name in later]
        return
    spec = dataclasses.replace(subject.spec, declaration={**subject.spec.declaration, "tiny_config": subject.tiny_config})
    with _declared(spec):
        say(f"[conformance] {spec.name}: templates against a tiny model built from its config")
        built: dict[str, Any] = {}
        arch.checks.append(_row("templates", lambda: _templates(spec, built)))
        for name, check in (("weight layout", _weight_layout), ("norm", _norm), ("lm head", _lm_head)):
            say(f"[conformance] {spec.name}: {name}")
            arch.checks.append(_row(name, lambda: check(spec, built["model"])) if "model" in built
                               else Check(name, SKIP, "the tiny model did not build"))
        blocked = [c.name for c in arch.checks if c.name in STRUCTURE_ROWS and c.status != PASS]
        if blocked:
            arch.checks += [Check(name, SKIP, f"{' and '.join(blocked)} failed: fix the declaration first")
                            for name in later[3:]]
            return
        arch.checks += _edit_rows(spec, settings, say)


def fix_text(fix: str) -> str:
    return f"\n  fix: {fix}"


def _row(name: str, run: Callable[[], Check]) -> Check:
    """One check, run: an AdapterkitError (or any exception of the model under test) is the row's failure."""
    started = time.perf_counter()
    try:
        row = run()
    except AdapterkitError as exc:
        row = Check(name, FAIL, exc.message + (fix_text(exc.fix) if exc.fix else ""))
    except Exception as exc:  # the declared model failing to run is this row's finding, not a crash of the report
        row = Check(name, FAIL, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    row.seconds = round(time.perf_counter() - started, 2)
    return row


# --- structure: a real tiny model -----------------------------------------------------------------
def _templates(spec, built: dict) -> Check:
    """Every role's template names a module of the instantiated tiny model, with the shapes its config implies, and
    the attn / mlp containers return their output projection's output on real tokens."""
    import torch

    from .detect import check_checkpoint
    from ..checkpoints.build import TensorIndex, build_model

    torch.manual_seed(0)
    try:
        model = build_model(spec.tiny_config, spec).eval()
    except AdapterkitError:
        raise
    except Exception as exc:
        raise AdapterkitError(f"the tiny model does not build: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                              fix=f"make tiny_config a config.json the declared (or Auto) classes accept ({spec.source})") from None
    built["model"] = model
    index = TensorIndex({n: tuple(t.shape) for n, t in model.state_dict().items()}, source="the tiny model")
    check_checkpoint(spec, spec.tiny_config, index, where=f"tiny {spec.name} model")
    problems = _value_point_problems(spec, model)
    if problems:
        raise AdapterkitError("; ".join(problems), fix=f"declare the projection itself as the container ({spec.source})")
    depth = spec.num_layers(model.config)
    return Check("templates", PASS, f"every role resolves in all {depth} layers of the tiny model, shapes as the config implies")


def _value_point_problems(spec, model) -> list[str]:
    from .inference import value_point_problems

    return [message for _, message, _ in value_point_problems(spec.declaration, model)]


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _weight_layout(spec, model) -> Check:
    """Each declared projection of layer 0 computes x W^T (linear) or x W (conv1d) as declared."""
    from .spec import LAYER_ROLES

    found = {}
    for role in (r for r in LAYER_ROLES if r in ("attn_out", "mlp_in", "mlp_gate", "mlp_out") and spec.has_role(r)):
        found[role] = _computed_layout(spec.module(model, role, 0))
    wrong = {role: layout for role, layout in found.items() if layout != spec.weight_layout}
    if wrong:
        role, layout = next(iter(wrong.items()))
        raise AdapterkitError(
            f"weight_layout is {spec.weight_layout!r}, but {spec.module_name(role, 0)} (role {role}) computes "
            + ("x @ W (Conv1D, weight [in, out])" if layout == "conv1d" else "x @ W.T (nn.Linear, weight [out, in])"
               if layout == "linear" else "neither x @ W.T nor x @ W"),
            fix=f"set weight_layout: {layout} in {spec.source}" if layout in ("linear", "conv1d")
            else "declare a plain projection (nn.Linear or Conv1D) for that role")
    return Check("weight layout", PASS, f"{spec.weight_layout}: {', '.join(found)} compute "
                 + ("x @ W" if spec.weight_layout == "conv1d" else "x @ W.T"))


def _computed_layout(module) -> str:
    import torch

    weight = module.weight.detach()
    with torch.no_grad():
        for layout, width, apply in (("linear", weight.shape[1], lambda x: x @ weight.T),
                                     ("conv1d", weight.shape[0], lambda x: x @ weight)):
            x = torch.randn(2, width, dtype=weight.dtype)
            try:
                linear_part = module(x) - module(torch.zeros_like(x))
            except RuntimeError:  # the module takes the other width
                continue
            if linear_part.shape == apply(x).shape and torch.allclose(linear_part, apply(x), atol=1e-5, rtol=1e-4):
                return layout
    return "other"


def _norm(spec, model) -> Check:
    """The final norm is LayerNorm (unchanged when every feature shifts by one constant) or RMSNorm (changed)."""
    import torch

    module = spec.module(model, "ln_f")
    hidden = spec.hidden_size(model.config)
    x = torch.randn(3, hidden)
    with torch.no_grad():
        shift_invariant = torch.allclose(_first(module(x)), _first(module(x + 3.0)), atol=1e-4)
    computed = "layernorm" if shift_invariant else "rmsnorm"
    if computed != spec.norm:
        raise AdapterkitError(f"norm is {spec.norm!r}, but {spec.template('ln_f')} ({type(module).__name__}) "
                              + ("subtracts the mean, as LayerNorm" if shift_invariant else "does not subtract the mean, as RMSNorm"),
                              fix=f"set norm: {computed} in {spec.source}")
    return Check("norm", PASS, f"{spec.norm}: {spec.template('ln_f')} ({type(module).__name__}) behaves as one")


def _lm_head(spec, model) -> Check:
    """embed and lm_head are the model's input and output embeddings, tied exactly when the config says so."""
    for role, module, getter in (("embed", model.get_input_embeddings(), "get_input_embeddings()"),
                                 ("lm_head", model.get_output_embeddings(), "get_output_embeddings()")):
        if spec.module(model, role) is not module:
            raise AdapterkitError(f"{role} is {spec.template(role)!r}, but the model's {getter} is another module",
                                  fix=f"declare modules.{role} as the module {getter} returns ({spec.source})")
    declared, actual = spec.lm_head_tied(model.config), spec.lm_head_shares_embedding(model)
    if declared != actual:
        key = spec.declaration["config"].get("tied_lm_head", "tie_word_embeddings")
        raise AdapterkitError(
            f"the declaration says the head is {'tied' if declared else 'untied'} for this config "
            f"({key}={getattr(model.config, key, None) if key else None}, tied_lm_head={spec.tied_lm_head}), "
            f"but the model's head {'shares' if actual else 'does not share'} the embedding's tensor",
            fix=f"set tied_lm_head: {str(actual).lower()} (the family default) or config.tied_lm_head to the flag the "
                f"model class reads, in {spec.source}")
    return Check("lm head", PASS, f"{spec.template('lm_head')} ({'tied to' if actual else 'separate from'} "
                 f"{spec.template('embed')}), as declared")


# --- editing a trained fact model ------------------------------------------------------------------
def load_fact_model(arch: str, settings: ConformanceSettings, recipe: str = "subject_recall"):
    """The tiny model conformance trains for ``arch`` (or loads from ``settings.cache()``): ``subject_recall`` for
    the locate-then-edit methods, ``plain`` for the trained editors (the kinds the test suite edits with each)."""
    from ..demo.factmodels import load_or_train

    return load_or_train(arch, settings.cache() / "fact-models", **fact_model_options(settings, recipe))


def fact_model_options(settings: ConformanceSettings, recipe: str) -> dict:
    """load_or_train's arguments for conformance's ``recipe`` model (cache_entry_name takes them too)."""
    return {"n_facts": settings.n_facts, "recipe": recipe, "seed": settings.seed,
            "steps": settings.train_steps if recipe == "subject_recall" else None}


def _edit_rows(spec, settings: ConformanceSettings, say) -> list[Check]:
    say(f"[conformance] {spec.name}: training (or loading) a tiny model on {settings.n_facts} facts "
        f"(at most {settings.train_steps} steps)")
    started = time.perf_counter()
    recipes = {m: "plain" if _registry().method(m.upper()).trainable else "subject_recall" for m in settings.methods}
    facts = {}
    try:
        for recipe in dict.fromkeys(recipes.values()):
            facts[recipe] = load_fact_model(spec.name, settings, recipe)
    except AdapterkitError as exc:
        reason = f"no fact model: {exc.message}"
        return [Check(m.upper(), FAIL, reason) for m in settings.methods] + [
            Check(name, SKIP, "no fact model") for name in ("restore", "deltas round-trip")]
    say(f"[conformance] {spec.name}: fact model(s) ready in {time.perf_counter() - started:.0f}s")
    some = next(iter(facts.values()))
    answers = some.facts.answers()
    edits = [r for r in some.facts.trained if r["target_new"] in answers]
    if not edits:
        raise AdapterkitError(f"none of the first {settings.n_facts} facts has a new target the model answers elsewhere",
                              fix="raise n_facts (12 gives 4 edits)")
    rows, replays = [], []
    for method in settings.methods:
        say(f"[conformance] {spec.name}: {method.upper()} on {len(edits)} edit(s)")
        replay: dict[str, Any] = {}
        fact = facts[recipes[method]]
        rows.append(_row(method.upper(), lambda: _edit(method.upper(), fact, spec, edits, settings, replay, say)))
        if replay:
            replays.append(replay)
    rows.append(_restore_row(replays))
    rows.append(_deltas_row(replays))
    return rows


def _edit(method_name: str, fact, spec, edits, settings: ConformanceSettings, replay: dict, say) -> Check:
    """Edit ``fact.model`` with the method, measure, and keep what the restore and deltas rows compare."""
    from .. import api
    from ..editing.metrics import summarise

    method = _registry().method(method_name)
    hparams = _hparams(method, fact, spec, settings, say)
    # locate-then-edit methods take the edits in one call; a trained editor edits one fact at a time, restored
    # in between, as its quality tests and papers measure it (MEND's summed updates of four facts at once undo
    # each other on these small models: efficacy 0.00 where single edits reach 1.00)
    calls = [[edit] for edit in edits] if method.trainable else [list(edits)]
    metrics = []
    for call in calls:
        before = _state(fact.model) if not replay else None
        result = api.edit(fact.model, fact.tok, call, hparams)
        try:
            metrics += result.metrics
            if result.deltas and not replay:
                path = settings.cache() / "deltas" / f"{spec.name}-{method_name.lower()}.safetensors"
                result.save(path)
                replay.update(method=method_name, path=path, fact=fact, before=before, edited=_state(fact.model),
                              logits=_logits(fact.model, fact.tok, call), edits=call)
        finally:
            result.restore()
        if replay and "restored" not in replay:
            replay["restored"] = _state(fact.model)
    numbers = {k: round(v, 3) for k, v in summarise(metrics).items() if v is not None}
    numbers["efficacy_before"] = round(sum(r["pre"]["rewrite_acc"] for r in metrics) / len(edits), 3)
    numbers["edits"] = len(edits)
    threshold = settings.min_trained_efficacy if method.trainable else settings.min_efficacy
    shown = ", ".join(f"{k} {numbers[k]:.2f}" for k in ("efficacy", "generalisation", "locality") if k in numbers)
    detail = f"{shown} ({len(edits)} edits; efficacy before {numbers['efficacy_before']:.2f})"
    if numbers.get("efficacy", 0.0) < threshold:
        raise AdapterkitError(f"{detail}: the edits do not make the new targets the answer (efficacy under {threshold})",
                              fix=f"check the declaration's {method_name} defaults and module roles ({spec.source})")
    if numbers["efficacy_before"] >= numbers["efficacy"]:
        raise AdapterkitError(f"{detail}: the edits changed nothing", fix="check the module roles the method writes")
    return Check(method_name, PASS, detail, numbers)


def _hparams(method, fact, spec, settings: ConformanceSettings, say) -> dict:
    """What `detect` writes for the fact model, with the fact-model sizes' overrides (demo/data/tiny_hparams.yaml),
    statistics over the facts it was trained on, and a briefly trained editor for MEND and SERAC."""
    from .detect import method_hparams
    from ..demo.factmodels import tiny_hparams, write_stats_corpus
    from ..editing.archive import EDITOR_FILE, settings_digest
    from ..requests import normalise_requests

    hp = {**method_hparams(spec, fact.model.config.to_dict(), method, model_name=f"conformance-{spec.name}"),
          **tiny_hparams(method.name)}
    model_id = Path(fact.model.name_or_path).name  # the fact model's cache key: a retrained model gets new statistics
    if hp.get("mom2_adjustment"):
        corpus = write_stats_corpus(fact, settings.cache() / "corpus" / f"{model_id}.txt")
        hp.update(mom2_corpus=str(corpus), mom2_dataset=f"facts-{model_id}", mom2_n_samples=1000,
                  stats_dir=str(settings.cache() / "stats"))
    if "context_template_length_params" in hp:
        # a few facts give subjects that share most of their key; templates sampled from such a model move the
        # neighbours along, and the bare prompts are what is measured
        hp["context_template_length_params"] = []
    if method.trainable:
        hp.update(max_iters=settings.editor_iters, val_every=max(settings.editor_iters // 2, 1))
        archive = settings.cache() / "editors" / f"{method.name.lower()}-{settings.editor_iters}-{model_id}-{settings_digest(hp)}"
        hp["archive"] = str(archive)
        if not (archive / EDITOR_FILE).is_file():
            say(f"[conformance] {spec.name}: training a {method.name} editor ({settings.editor_iters} steps)")
            records = normalise_requests(list(fact.facts.held_out) + list(fact.facts.trained))
            from ..api import train

            train(fact.model, fact.tok, hp, records[8:], archive, val=records[:8], progress=False)
    return hp


def _registry():
    from .registry import get_registry

    return get_registry()


def _state(model) -> dict:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def _logits(model, tok, edits):
    import torch

    from ..editing.metrics import encode_pairs

    ids, mask, _ = encode_pairs(tok, [r["prompt"] for r in edits], [" " + r["target_new"] for r in edits])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def _restore_row(replays: list[dict]) -> Check:
    import torch

    if not replays:
        return Check("restore", SKIP, "no selected method wrote weights (SERAC answers through its own model)")
    differ = [f"{r['method']}: {n}" for r in replays for n, t in r["restored"].items() if not torch.equal(t, r["before"][n])]
    if differ:
        return Check("restore", FAIL, f"weights differ after edit + restore: {', '.join(differ[:4])}"
                     + fix_text("write weights only through EditResult.add (ledger.add)"))
    return Check("restore", PASS, f"edit + restore gives the original weights bit for bit ({', '.join(r['method'] for r in replays)})")


def _deltas_row(replays: list[dict]) -> Check:
    started = time.perf_counter()
    if not replays:
        return Check("deltas round-trip", SKIP, "no selected method wrote weights")
    row = _row("deltas round-trip", lambda: _replay_all(replays))
    row.seconds = round(time.perf_counter() - started, 2)
    return row


def _replay_all(replays: list[dict]) -> Check:
    import torch

    from ..checkpoints.loading import load_model
    from ..editing.result import apply_deltas

    for r in replays:
        fresh, _ = load_model(r["fact"].model.name_or_path, dtype=torch.float32, tokenizer=False)
        apply_deltas(fresh, r["path"])
        differ = [n for n, t in fresh.state_dict().items() if not torch.equal(t, r["edited"][n])]
        if differ:
            raise AdapterkitError(f"{r['method']}: deltas from {r['path']} applied to a fresh model give other weights "
                                  f"({', '.join(differ[:4])})", fix="check the weight names the deltas hold against the model's")
        if not torch.equal(_logits(fresh.eval(), r["fact"].tok, r["edits"]), r["logits"]):
            raise AdapterkitError(f"{r['method']}: a fresh model with the saved deltas answers differently from the edited one")
    return Check("deltas round-trip", PASS, "saved deltas loaded into a fresh model give the edited weights and outputs "
                 f"({', '.join(r['method'] for r in replays)})")


@contextlib.contextmanager
def _declared(spec):
    """The registry answers with ``spec`` for its model types while the checks run (edit, training and the fact
    models look architectures up there), then is as it was."""
    from .registry import get_registry

    registry = get_registry()
    saved = list(registry.architectures)
    registry.architectures[:] = [s for s in saved if s.name != spec.name
                                 and not set(s.model_types) & set(spec.model_types)] + [spec]
    try:
        yield
    finally:
        registry.architectures[:] = saved


def parse_methods(text: str | None) -> tuple[str, ...]:
    """``--methods rome,memit`` -> ("ROME", "MEMIT"); all five when not given."""
    if not text:
        return METHODS
    methods = tuple(dict.fromkeys(m.strip().upper() for m in text.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise AdapterkitError(f"--methods {text!r}: unknown method(s) {', '.join(unknown) or '(none given)'}",
                              fix=f"a comma-separated subset of {','.join(m.lower() for m in METHODS)}")
    return methods


def run_and_report(target, settings: ConformanceSettings, json_path=None, say: Callable[[str], None] = print,
                   out: Callable[[str], None] = print) -> bool:
    """run_conformance, the table printed, the JSON written when asked; True when every row passed."""
    report = run_conformance(target, settings, say=say)
    out(report.table())
    if json_path:
        report.write_json(json_path)
        say(f"[conformance] wrote {json_path}")
    return report.passed
