"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", section 2): which
hidden states carry a fact the model knows, and so which layer ROME and MEMIT should edit.

For each fact (a prompt holding its subject, and the true answer) whose answer is the model's greedy one:
  1. a clean run records every layer's residual state (the block's output), MLP output and attention output;
  2. corrupted runs add Gaussian noise to the input embeddings of the subject's tokens, one run per noise
     sample; the noise's scale is ``noise_factor`` (the paper's 3) times the standard deviation of the
     embeddings of the subject tokens of all the facts given;
  3. for each layer, and each token from the subject on, the corrupted runs are repeated with the clean state
     restored there: the block output of that layer (kind ``hidden``), or the MLP / attention outputs of a
     window of ``window`` layers centred on it (kinds ``mlp`` and ``attn``; the paper's window of 10). The
     probability of the true answer's first token, averaged over the noise samples, is the state's score.
A state's indirect effect is its score minus the corrupted run's. ``TraceResult.effects`` averages it over
facts by token kind (first, middle and last subject token, the first token after the subject, further tokens,
the last token) as the paper's summary figures do; ``TraceResult.peak`` is the layer where the MLP's effect at
the last subject token is largest.

A fact's noise is drawn once and shared by all of its restorations, as in the reference code, so differences
between states are not differences between draws. All restorations of one layer run in one batch, and the
blocks below the first restored module, which compute exactly what the corrupted run computed, replay its
outputs instead of running again (checked against a full forward on the first fact).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

# Every hook and token helper comes through this one import, so a move inside editing/ is a one-line change here.
from ..editing.hooks import edit_output, frozen, trace as recording
from ..editing.replay import BlockReplay
from ..editing.tokens import in_context, model_device, subject_span, token_ids
from ..editing.values import target_ids
from ..errors import AdapterkitError, RequestError
from ..requests import EditRequest, load_requests, normalise_requests

KINDS = ("hidden", "mlp", "attn")
KIND_ROLES = {"hidden": "layer", "mlp": "mlp", "attn": "attn"}  # the ArchSpec role whose output is restored
KIND_LABELS = {"hidden": "hidden state", "mlp": "MLP", "attn": "attention"}
TOKEN_KINDS = ("subject_first", "subject_middle", "subject_last", "first_after", "further", "last")
TOKEN_KIND_LABELS = {"subject_first": "first subject token", "subject_middle": "middle subject tokens",
                     "subject_last": "last subject token", "first_after": "first subsequent token",
                     "further": "further tokens", "last": "last token"}
TRACE_FORMAT = "adapterkit-trace/1"


@dataclass(frozen=True)
class TraceSettings:
    samples: int = 10                 # noise draws per fact (the paper's 10)
    noise_factor: float = 3.0         # noise std = this x the subject tokens' embedding std (the paper's 3)
    window: int = 10                  # MLP / attention layers restored together around the traced layer
    kinds: tuple[str, ...] = KINDS
    token_kinds: tuple[str, ...] = TOKEN_KINDS  # which token positions to trace; fewer is faster
    limit: int | None = None          # trace at most this many known facts
    seed: int = 1
    batch_size: int = 128             # sequences per forward pass
    replay: bool = True               # replay the corrupted run's unchanged lower blocks instead of recomputing them

    def __post_init__(self):
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "token_kinds", tuple(self.token_kinds))
        bad = [k for k in self.kinds if k not in KINDS] + [t for t in self.token_kinds if t not in TOKEN_KINDS]
        if bad or not self.kinds or not self.token_kinds:
            raise AdapterkitError(f"trace settings: unknown or missing kinds {bad or '(none given)'}",
                                  fix=f"choose kinds from {list(KINDS)} and token kinds from {list(TOKEN_KINDS)}")
        for name in ("samples", "window", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise AdapterkitError(f"trace settings: {name} must be at least 1, got {getattr(self, name)}")
        if self.noise_factor <= 0 or (self.limit is not None and self.limit < 1):
            raise AdapterkitError("trace settings: noise_factor must be positive and limit at least 1",
                                  fix="the paper's settings are noise_factor 3 and no limit")


@dataclass
class FactTrace:
    """One traced fact. ``scores[kind][token][layer]``: p(answer) with that state restored (None: not traced)."""
    prompt: str
    subject: str
    answer: str
    tokens: list[str]
    subject_tokens: tuple[int, int]   # first and last subject token, inclusive
    high: float                       # p(answer) on the clean run
    low: float                        # p(answer) on the corrupted runs, nothing restored
    scores: dict[str, list[list[float | None]]]

    def rows(self, kind: str, token_kind: str) -> list[list[float]]:
        """The traced score rows of this fact's tokens of ``token_kind``."""
        first, last = self.subject_tokens
        table = self.scores[kind]
        return [table[p] for p in token_kind_positions(first, last, len(self.tokens))[token_kind]
                if all(s is not None for s in table[p])]


def token_kind_positions(first: int, last: int, n_tokens: int) -> dict[str, list[int]]:
    """Token positions of each token kind, for a subject spanning ``first..last`` of ``n_tokens``."""
    after = last + 1
    return {"subject_first": [first], "subject_middle": list(range(first + 1, last)), "subject_last": [last],
            "first_after": [after] if after < n_tokens else [], "further": list(range(after + 1, n_tokens - 1)),
            "last": [n_tokens - 1]}


@dataclass
class TraceResult:
    settings: TraceSettings
    num_layers: int
    noise: float                      # the noise's standard deviation (noise_factor x the embeddings' std)
    facts: list[FactTrace]
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> how many facts
    model: str = ""
    seconds: float | None = None

    def effects(self, kind: str) -> dict[str, list[float] | None]:
        """Average indirect effect per token kind and layer: mean score over the facts' tokens of that kind
        (middle and further tokens pooled, as the paper pools them) minus the mean corrupted score."""
        if kind not in self.settings.kinds or not self.facts:
            return {t: None for t in TOKEN_KINDS}
        low = sum(f.low for f in self.facts) / len(self.facts)
        out = {}
        for token_kind in TOKEN_KINDS:
            # a kind not asked for can still share a position with one that was (a one-token subject's first token)
            traced = token_kind in self.settings.token_kinds
            rows = [row for f in self.facts for row in f.rows(kind, token_kind)] if traced else []
            out[token_kind] = ([sum(col) / len(rows) - low for col in zip(*rows)] if rows else None)
        return out

    def peak(self, kind: str = "mlp", token_kind: str = "subject_last") -> int:
        """The layer of the largest average indirect effect of ``kind`` at ``token_kind``."""
        row = self.effects(kind)[token_kind]
        if row is None:
            raise AdapterkitError(
                f"the trace{' of ' + self.model if self.model else ''} has no {kind} effect at the {TOKEN_KIND_LABELS[token_kind]}"
                + ("" if self.facts else f": no fact was traced (skipped: {self.skipped or 'none given'})"),
                fix="give facts the model knows (its greedy answer is the true answer), and trace the 'mlp' kind")
        return max(range(len(row)), key=row.__getitem__)

    def strongest(self, kind: str = "mlp") -> tuple[str, int, float] | None:
        """(token kind, layer, average indirect effect) of the largest effect of ``kind`` over every traced token kind."""
        cells = [(token_kind, layer, effect) for token_kind, row in self.effects(kind).items() if row is not None
                 for layer, effect in enumerate(row)]
        return max(cells, key=lambda cell: cell[2]) if cells else None

    @property
    def total_effect(self) -> float | None:
        if not self.facts:
            return None
        return sum(f.high - f.low for f in self.facts) / len(self.facts)

    # --- JSON -------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        kinds = {}
        for kind in self.settings.kinds:
            effects = self.effects(kind)
            has_peak = effects["subject_last"] is not None
            kinds[kind] = {
                "peak_layer_subject_last": self.peak(kind) if has_peak else None,
                "peak_effect_subject_last": max(effects["subject_last"]) if has_peak else None,
                "average_indirect_effect": {t: _rounded(row) for t, row in effects.items()},
            }
        settings = asdict(self.settings)
        settings.update(kinds=list(self.settings.kinds), token_kinds=list(self.settings.token_kinds))
        return {"format": TRACE_FORMAT, "model": self.model, "num_layers": self.num_layers, "settings": settings,
                "noise": self.noise, "facts_used": len(self.facts), "skipped": self.skipped,
                "average_total_effect": _rounded(self.total_effect), "seconds": _rounded(self.seconds),
                "token_kinds": dict(TOKEN_KIND_LABELS), "kinds": kinds,
                "facts": [{**asdict(f), "subject_tokens": list(f.subject_tokens),
                           "scores": {k: [_rounded(row) for row in table] for k, table in f.scores.items()}}
                          for f in self.facts]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "trace") -> "TraceResult":
        if not isinstance(data, Mapping) or data.get("format") != TRACE_FORMAT:
            raise AdapterkitError(f"{source}: not a trace written by `adapterkit trace` (format {TRACE_FORMAT})",
                                  fix="pass the trace.json that `adapterkit trace` wrote, or a facts file")
        try:
            settings = TraceSettings(**data["settings"])
            facts = [FactTrace(**{**f, "subject_tokens": tuple(f["subject_tokens"])}) for f in data["facts"]]
            return cls(settings, int(data["num_layers"]), float(data["noise"]), facts, dict(data.get("skipped", {})),
                       data.get("model", ""), data.get("seconds"))
        except (KeyError, TypeError) as exc:
            raise AdapterkitError(f"{source}: incomplete trace ({exc})", fix="run `adapterkit trace` again") from None


def _rounded(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return round(float(value), 6)


def write_trace(result: TraceResult, path) -> Path:
    from ..files.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, json.dumps(result.to_json(), indent=1) + "\n")
    return path


def read_trace(path) -> TraceResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterkitError(f"{path}: cannot read the trace ({exc})", fix="run `adapterkit trace` again") from None
    return TraceResult.from_json(data, str(path))


# --- tracing --------------------------------------------------------------------------------------
def causal_trace(model, tok, facts, settings: TraceSettings | None = None, *, spec=None, progress: bool = True,
                 model_name: str = "") -> TraceResult:
    """Trace ``facts`` (records in any form ``normalise_requests`` reads; each needs its true answer as
    ``ground_truth`` or ``target_true``) on ``model``. Facts the model does not know are skipped and counted."""
    from tqdm.auto import tqdm

    from ..arch.registry import get_registry

    settings = settings or TraceSettings()
    spec = spec or get_registry().for_model(model)
    requests = normalise_requests(facts, "facts")
    missing = [i for i, r in enumerate(requests) if r.ground_truth is None]
    if missing:
        raise RequestError(f"facts #{missing[0]}: no true answer to trace (ground_truth / target_true)",
                           fix="give each fact its true answer as ground_truth (CounterFact's target_true)")
    started = time.perf_counter()
    with frozen(model), torch.no_grad():
        tracer = _Tracer(model, tok, spec, settings, requests)
        traced, skipped = [], Counter()
        per_fact = len(settings.kinds) * tracer.num_layers
        # counted in layers, not facts: one fact of a large model takes minutes
        bar = tqdm(total=len(requests) * per_fact, desc="causal trace", unit="layer", disable=not progress)
        for request in requests:
            before = bar.n
            outcome = tracer.trace_fact(request, on_layer=lambda: bar.update(1))
            if isinstance(outcome, FactTrace):
                traced.append(outcome)
            else:
                skipped[outcome] += 1
            bar.update(before + per_fact - bar.n)
            bar.set_postfix(traced=len(traced), skipped=sum(skipped.values()))
            if settings.limit is not None and len(traced) >= settings.limit:
                break
        bar.close()
    return TraceResult(settings, tracer.num_layers, tracer.noise, traced, dict(skipped), model_name,
                       time.perf_counter() - started)


class _Tracer:
    def __init__(self, model, tok, spec, settings: TraceSettings, requests: Sequence[EditRequest]):
        self.model, self.tok, self.settings = model, tok, settings
        self.num_layers = spec.num_layers(model.config)
        self.modules = {kind: [spec.module_name(KIND_ROLES[kind], i) for i in range(self.num_layers)]
                        for kind in set(settings.kinds) | {"hidden"}}
        self.blocks = self.modules["hidden"]
        self.embed, self.lm_head = spec.module_name("embed"), spec.module_name("lm_head")
        self.device = model_device(model)
        self.noise = settings.noise_factor * subject_embedding_std(model, tok, spec, requests)
        self.checked = False  # the head cut and the replay are checked on the first fact traced
        self.cut_head, self.replay = False, settings.replay

    def window(self, kind: str, layer: int) -> tuple[int, int]:
        """Layers ``lo..hi-1`` restored when ``layer`` is traced (the paper's window, centred on the layer)."""
        if kind == "hidden":
            return layer, layer + 1
        size = self.settings.window
        return max(0, layer - size // 2), min(self.num_layers, layer + (size + 1) // 2)

    def trace_fact(self, request: EditRequest, on_layer=None) -> FactTrace | str:
        """The fact's trace, or why it was skipped; ``on_layer()`` is called after each layer of each kind."""
        run = _FactRun.prepare(self, request)
        if isinstance(run, str):
            return run
        if not self.checked:
            self.check_shortcuts(run)
        scores = {}
        positions = sorted({p for t in self.settings.token_kinds
                            for p in token_kind_positions(run.first, run.last, run.length)[t]})
        per_batch = max(1, self.settings.batch_size // self.settings.samples)
        for kind in self.settings.kinds:
            table: list[list[float | None]] = [[None] * self.num_layers for _ in range(run.length)]
            for layer in range(self.num_layers):
                lo, hi = self.window(kind, layer)
                replayed = (hi if kind == "hidden" else lo) if self.replay else 0
                for start in range(0, len(positions), per_batch):
                    chunk = positions[start: start + per_batch]
                    for p, score in zip(chunk, self.scores(run, self.modules[kind][lo:hi], chunk, replayed).tolist()):
                        table[p][layer] = score
                if on_layer is not None:
                    on_layer()
            scores[kind] = table
        return FactTrace(request.prompt, request.subject, self.tok.decode([run.answer]),
                         [self.tok.decode([i]) for i in run.ids[0].tolist()], (run.first, run.last),
                         run.high, run.low, scores)

    def scores(self, run: "_FactRun", modules: Sequence[str], positions: Sequence[int], replayed: int = 0) -> torch.Tensor:
        """p(answer), averaged over the noise samples, with the clean output of ``modules`` restored at each of
        ``positions`` in turn (one score per position; nothing restored when ``positions`` is empty).
        The lowest ``replayed`` blocks give the corrupted run's outputs instead of running."""
        samples = self.settings.samples
        groups = max(len(positions), 1)
        noise = run.noise.repeat(groups, 1, 1)
        with contextlib.ExitStack() as stack:
            stack.enter_context(edit_output(self.model, self.embed, _adding(noise, run.first)))
            if positions:
                rows = torch.arange(groups * samples, device=self.device)
                at = torch.tensor(list(positions), device=self.device).repeat_interleave(samples)
                for name in modules:
                    stack.enter_context(edit_output(self.model, name, _restoring(run.clean[name], rows, at)))
            if replayed:
                stack.enter_context(run.corrupted.replaying(only=self.blocks[:replayed], repeat=groups))
            logits = self.logits(run.ids.expand(groups * samples, -1))
        return logits.softmax(-1)[:, run.answer].view(groups, samples).mean(1)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """The last position's logits (float32); the head reads only that position where that was checked exact."""
        with _last_position_head(self.model, self.lm_head) if self.cut_head else contextlib.nullcontext():
            return self.model(input_ids=ids, use_cache=False).logits[:, -1].float()

    def check_shortcuts(self, run: "_FactRun") -> None:
        """Keep the head cut and the replay only where they reproduce full forward passes on this fact."""
        full = self.logits(run.ids)
        self.cut_head = True
        try:
            self.cut_head = torch.allclose(self.logits(run.ids), full, rtol=1e-4, atol=1e-5)
        except (RuntimeError, IndexError):  # a head whose input is not [batch, tokens, hidden]
            self.cut_head = False
        if self.replay:
            lo, hi = self.window("hidden", self.num_layers // 2)
            probe = [run.last, run.length - 1]
            replayed = self.scores(run, self.modules["hidden"][lo:hi], probe, hi)
            self.replay = torch.allclose(replayed, self.scores(run, self.modules["hidden"][lo:hi], probe), rtol=1e-3, atol=1e-5)
            if not self.replay:
                warnings.warn("causal trace: replaying the corrupted run's lower blocks does not reproduce a full "
                              "forward on this model; every restoration runs the whole model (slower)")
        self.checked = True


@dataclass
class _FactRun:
    """One fact's token ids, answer, clean states, noise and corrupted block outputs."""
    ids: torch.Tensor                 # [1, T]
    first: int
    last: int
    answer: int
    high: float
    noise: torch.Tensor               # [samples, subject tokens, hidden]
    clean: dict[str, torch.Tensor]    # module -> its clean output [1, T, hidden]
    corrupted: BlockReplay | None = None   # the blocks' outputs on the corrupted runs
    low: float = math.nan

    @property
    def length(self) -> int:
        return self.ids.shape[1]

    @classmethod
    def prepare(cls, tracer: _Tracer, request: EditRequest) -> "_FactRun | str":
        tok, model = tracer.tok, tracer.model
        prompt = in_context(request.prompt, request.subject)
        ids = token_ids(tok, prompt.text)
        first, last = subject_span(tok, prompt, ids)
        if last >= len(ids) - 1:
            return "subject ends the prompt"
        answer = target_ids(tok, prompt.text, request.ground_truth)[0]
        names = [n for kind in tracer.modules.values() for n in kind]
        ids = torch.tensor([ids], device=tracer.device)
        with recording(model, outputs=[tracer.embed, *names]) as record:
            probs = tracer.logits(ids).softmax(-1)[0]
        if int(probs.argmax()) != answer:
            return "not known (greedy prediction is not the answer's first token)"
        noise = draw_noise(tracer.settings, last - first + 1, record.outputs[tracer.embed].shape[-1], tracer.noise)
        run = cls(ids, first, last, answer, float(probs[answer]), noise.to(tracer.device),
                  {n: record.outputs[n].detach().clone() for n in names})
        corrupted = BlockReplay(model, tracer.blocks)
        with corrupted.recording():
            run.low = float(tracer.scores(run, (), ()))
        if tracer.replay and any(corrupted.calls[b] != 1 for b in tracer.blocks):
            tracer.replay = False
        run.corrupted = corrupted
        return run


def draw_noise(settings: TraceSettings, tokens: int, hidden: int, scale: float) -> torch.Tensor:
    """The noise added to a fact's subject embeddings: [samples, tokens, hidden], the same for every fact's
    draw (seeded), as the reference code's fixed seed makes it."""
    generator = torch.Generator().manual_seed(settings.seed)
    return torch.randn(settings.samples, tokens, hidden, generator=generator) * scale


def subject_embedding_std(model, tok, spec, requests: Sequence[EditRequest]) -> float:
    """Standard deviation of the input embeddings of the subject tokens of ``requests`` (all of them together)."""
    embed = spec.module(model, "embed")
    device = model_device(model)
    values = []
    for request in requests:
        prompt = in_context(request.prompt, request.subject)
        ids = token_ids(tok, prompt.text)
        first, last = subject_span(tok, prompt, ids)
        values.append(embed(torch.tensor([ids[first: last + 1]], device=device))[0].float())
    return float(torch.cat(values).std())


# --- hooks ------------------------------------------------------------------------------------------
def _adding(noise: torch.Tensor, first: int):
    def add(output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, first: first + noise.shape[1]] += noise.to(output.device, output.dtype)
        return output
    return add


def _restoring(clean: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor):
    """Set row ``rows[i]`` at position ``positions[i]`` to the clean run's state there."""
    def restore(output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        here = positions.to(output.device)  # on a placed model each module's output is on its own device
        output[rows.to(output.device), here] = clean[0, positions.to(clean.device)].to(output.device, output.dtype)
        return output
    return restore


@contextlib.contextmanager
def _last_position_head(model, lm_head: str):
    """The output head reads only the last position (its logits are the only ones a trace needs)."""
    handle = model.get_submodule(lm_head).register_forward_pre_hook(lambda module, args: (args[0][:, -1:], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


# --- choosing edit layers from a trace (detect --trace) ------------------------------------------
DETECT_SETTINGS = TraceSettings(kinds=("mlp",), token_kinds=("subject_last",), limit=50)


def load_trace(source, model_path=None, *, settings: TraceSettings = DETECT_SETTINGS, progress: bool = True) -> TraceResult:
    """A trace from ``source``: a TraceResult, a trace.json written by `adapterkit trace`, or facts (a file or
    records) traced now on the checkpoint at ``model_path``."""
    if isinstance(source, TraceResult):
        return source
    if isinstance(source, (str, Path)) and _is_trace_file(Path(source)):
        return read_trace(source)
    from ..checkpoints.loading import load_model

    requests = load_requests(source) if isinstance(source, (str, Path)) else normalise_requests(source, "facts")
    model, tok = load_model(model_path, dtype=torch.float32)
    if tok is None:
        raise AdapterkitError(f"{model_path}: no tokenizer files found, so facts cannot be traced",
                              fix="copy the tokenizer files into the checkpoint directory")
    return causal_trace(model, tok, requests, settings, progress=progress, model_name=str(model_path))


def _is_trace_file(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        return isinstance(data, dict) and data.get("format") == TRACE_FORMAT
    return False


def traced_layers(result: TraceResult, spec, method: str, default_layers: Sequence[int]) -> list[int]:
    """Edit layers at the measured MLP peak (last subject token): the peak alone where the method's published
    choice is one layer (ROME), else a range as long as the published one (MEMIT, PMET) ending at the peak."""
    peak = result.peak("mlp", "subject_last")
    rule = spec.method_defaults(method).get("layers")
    if isinstance(rule, Mapping) and "at" in rule:
        count = 1
    elif isinstance(rule, Mapping) and "from" in rule:
        count = int(rule["to"]) - int(rule["from"]) + 1
    else:
        count = len(default_layers)
    return list(range(max(0, peak - count + 1), peak + 1))


def check_traceable(hparams: Mapping) -> None:
    if "layers" not in hparams:
        raise AdapterkitError(f"{hparams['alg_name']} has no `layers` for a causal trace to choose",
                              fix="use --trace with a locate-then-edit method (ROME, MEMIT, PMET)")


def apply_trace(hparams: dict, spec, config, path, trace) -> TraceResult:
    """Replace ``hparams['layers']`` by the layers the causal trace ``trace`` measures (see ``traced_layers``)."""
    check_traceable(hparams)
    result = load_trace(trace, path)
    depth = spec.num_layers(config)
    if result.num_layers != depth:
        raise AdapterkitError(f"the trace{' of ' + result.model if result.model else ''} has {result.num_layers} layers, "
                              f"the checkpoint {path} has {depth}", fix="trace this checkpoint (`adapterkit trace`)")
    hparams["layers"] = traced_layers(result, spec, hparams["alg_name"], hparams["layers"])
    return result


def provenance(result: TraceResult, layers: Sequence[int], source) -> str:
    """One line saying where traced layers came from (the CLI writes it as the YAML's leading comment)."""
    effect = max(result.effects("mlp")["subject_last"])
    return (f"layers from causal tracing: MLP indirect effect at the last subject token peaks at layer "
            f"{result.peak('mlp')} (+{effect:.3f} p(answer), window {result.settings.window}, "
            f"{result.settings.samples} noise samples) over {len(result.facts)} known facts of {source}; "
            f"layers {list(layers)}")
