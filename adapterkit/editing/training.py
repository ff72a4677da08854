"""One trainer for the learned editors (MEND, SERAC): batches, validation, early stopping, checkpoints, resume.

A method hands the trainer a *task*: an object with

    editor                     the torch module being trained (its state is the archive)
    param_groups()             Adam parameter groups
    train_step(requests)       -> (loss tensor, {name: float})
    validate(requests)         -> {name: float} for one validation batch of edits
    archive_metadata()         -> dict saved beside the weights (architecture, shapes, hparams)

Files in ``out_dir`` (every write atomic, through :func:`adapterkit.fileio.atomic_path`):

    editor.safetensors         the best editor so far (what ``archive:`` points at), with its metadata
    hparams.yaml               the hyperparameters it was trained with
    trainer_state.safetensors  the last checkpoint: editor, optimizer state, RNG states, step, best metric
    validation.json            every validation's metrics

The batch order is a function of the seed and the step, and every random state is checkpointed, so
``resume=True`` after an interruption ends with the same editor, bit for bit, as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import AdapterkitError, ArchiveError
from ..fileio import atomic_path, write_text_atomic
from ..requests import EditRequest
from . import metrics as edit_metrics

EDITOR_FILE = "editor.safetensors"
STATE_FILE = "trainer_state.safetensors"
HPARAMS_FILE = "hparams.yaml"
HISTORY_FILE = "validation.json"
ARCHIVE_FORMAT = "adapterkit-editor/1"
STATE_FORMAT = "adapterkit-trainer-state/1"
# hparams that may change between an interrupted run and its resumption without changing its results
RESUMABLE_CHANGES = ("max_iters", "early_stop_patience", "device", "archive", "model_name")


# --- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainSettings:
    max_iters: int = 1000
    batch_size: int = 8
    accumulate_bs: int = 1                # edit episodes (of batch_size edits each) per optimiser step
    val_batch_size: int = 8
    val_every: int = 100
    val_steps: int | None = None          # validation batches per validation; None: the whole val set
    early_stop_key: str = "loss/total_edit_val"
    early_stop_patience: int = 1000
    grad_clip: float = 100.0
    seed: int = 0

    @classmethod
    def from_hparams(cls, hp: Mapping[str, Any]) -> "TrainSettings":
        fields_ = {f: hp[f] for f in cls.__dataclass_fields__ if hp.get(f) is not None}
        if "val_every" not in fields_ and hp.get("val_interval") is not None:  # EasyEdit's name
            fields_["val_every"] = hp["val_interval"]
        fields_.setdefault("val_batch_size", fields_.get("batch_size", cls.batch_size))
        return cls(**fields_)

    @property
    def minimise(self) -> bool:
        key = self.early_stop_key.lower()
        return any(word in key for word in ("loss", "nll", "ppl", "perplexity"))


def resolve_device(requested, model=None) -> torch.device:
    """``None``: where the model is; ``"auto"``: a GPU when present; an int: that GPU (EasyEdit's form)."""
    if requested is None:
        return next(model.parameters()).device if model is not None else torch.device("cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(requested, int) or (isinstance(requested, str) and requested.isdigit()):
        requested = f"cuda:{int(requested)}"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AdapterkitError(f"device {requested!r} asks for a GPU, but torch sees none",
                              fix="set `device: cpu` (or `auto`) in the hparams, or pass --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# --- batches --------------------------------------------------------------------------------------
def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The training records of ``step``: consecutive slices of a per-epoch permutation drawn from the seed."""
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, slot = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[slot * batch_size: (slot + 1) * batch_size].tolist()


def validation_batches(requests: Sequence[EditRequest], settings: TrainSettings) -> list[list[EditRequest]]:
    size = max(1, settings.val_batch_size)
    batches = [list(requests[i: i + size]) for i in range(0, len(requests), size)]
    return batches[: settings.val_steps] if settings.val_steps else batches


def split_validation(requests: Sequence[EditRequest], share: float = 0.1) -> tuple[list, list]:
    """Hold out the last ``share`` of the training records when no validation file is given."""
    n_val = max(1, int(len(requests) * share)) if len(requests) > 1 else 0
    if n_val == 0:
        return list(requests), list(requests)
    return list(requests[:-n_val]), list(requests[-n_val:])


def answer_pool(requests: Sequence[EditRequest]) -> list[str]:
    """Every new target and true answer of the training records (sorted, so draws are reproducible)."""
    return sorted({a for r in requests for a in (r.target_new, r.ground_truth) if a})


def with_random_targets(requests: Sequence[EditRequest], answers: Sequence[str]) -> list[EditRequest]:
    """The edits with new targets drawn (torch's RNG, checkpointed) from ``answers``."""
    picks = torch.randint(len(answers), (len(requests),)).tolist()
    return [dataclasses.replace(r, target_new=answers[i]) for r, i in zip(requests, picks)]


def with_unrelated_locality(requests: Sequence[EditRequest], pool: Sequence[EditRequest], count: int) -> list[EditRequest]:
    """Each edit with ``count`` records of ``pool`` from other relations (another prompt template) added to its
    locality inputs, prompt and true answer: the unrelated inputs MEND's paper trains locality on. Chosen by the
    edit's prompt, so an edit meets the same ones at every step and in validation."""
    if not count:
        return list(requests)
    widened = []
    for request in requests:
        others = [o for o in pool if o.ground_truth and o.template != request.template]
        picks = random.Random(zlib.crc32(request.prompt.encode())).sample(others, min(count, len(others)))
        truths = request.locality_ground_truths or ("",) * len(request.locality_prompts)
        widened.append(dataclasses.replace(request, locality_prompts=request.locality_prompts + tuple(o.prompt for o in picks),
                                           locality_ground_truths=truths + tuple(o.ground_truth for o in picks)))
    return widened


def load_sets(hp, train_path, val_path, train_requests=None, val_requests=None):
    """Training and validation EditRequests: given, or read from files (the last tenth of the training
    records when there is no validation file)."""
    from .datasets import load_training_records

    skip = bool(hp.get("skip_malformed", False))
    train_set = list(train_requests) if train_requests is not None else load_training_records(train_path, skip_malformed=skip)
    if val_requests is not None:
        return train_set, list(val_requests)
    if val_path is not None:
        return train_set, load_training_records(val_path, skip_malformed=skip)
    return split_validation(train_set)


# --- edit metrics shared by the methods ------------------------------------------------------------
def target_labels(tok, prompts: Sequence[str], targets: Sequence[str], device):
    """ids, mask and labels (-100 outside the target tokens) for teacher-forced prompt+target rows."""
    ids, mask, spans = edit_metrics.encode_pairs(tok, prompts, targets)
    labels = torch.full_like(ids, -100)
    for row, (start, stop) in enumerate(spans):
        labels[row, start:stop] = ids[row, start:stop]
    return ids.to(device), mask.to(device), labels.to(device)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (zero where unlabelled) and the label mask, predicting position t+1 from t."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != -100
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
    return nll.view(labels.shape) * mask, mask


def mean_nll(logits, labels) -> torch.Tensor:
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp(min=1)


def label_accuracy(logits, labels) -> float:
    """Share of labelled tokens predicted correctly (EasyEdit's token accuracy, averaged over rows)."""
    predicted, gold = logits[:, :-1].argmax(-1), labels[:, 1:]
    mask = gold != -100
    per_row = ((predicted == gold) & mask).sum(-1).float() / mask.sum(-1).clamp(min=1)
    return per_row.mean().item()


def kl_locality(base_logits, edited_logits, mask) -> torch.Tensor:
    """KL(base || edited) per token, averaged over the attended tokens (MEND's locality loss)."""
    base = base_logits.float().log_softmax(-1)
    edited = edited_logits.float().log_softmax(-1)
    per_token = (base.exp() * (base - edited)).sum(-1)
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def edit_quality(before: LogitsFn, after: LogitsFn, tok, requests: Sequence[EditRequest], device) -> dict:
    """Validation metrics of one batch of edits: edit and rephrase accuracy, locality, perplexity before/after."""
    out = {}
    ids, mask, labels = target_labels(tok, [r.prompt for r in requests], [r.target_new for r in requests], device)
    out["edit/acc"] = label_accuracy(after(ids, mask), labels)
    rephrase = [(p, r.target_new) for r in requests for p in r.rephrase_prompts]
    if rephrase:
        ids, mask, labels = target_labels(tok, *zip(*rephrase), device)
        out["rephrase/acc"] = label_accuracy(after(ids, mask), labels)
    local = [(p, (r.locality_ground_truths[i] if r.locality_ground_truths else r.target_new))
             for r in requests for i, p in enumerate(r.locality_prompts)]
    if local:
        ids, mask, labels = target_labels(tok, *zip(*local), device)
        pre, post = before(ids, mask), after(ids, mask)
        gold = labels[:, 1:] != -100
        same = (pre[:, :-1].argmax(-1) == post[:, :-1].argmax(-1)) & gold
        out["loc/acc"] = (same.sum() / gold.sum().clamp(min=1)).item()
        out["ppl/pre"] = math.exp(min(mean_nll(pre, labels).item(), 50.0))
        out["ppl/post"] = math.exp(min(mean_nll(post, labels).item(), 50.0))
    return out


# --- tensors in and out of safetensors --------------------------------------------------------------
def module_tensors(module: torch.nn.Module, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The module's state as distinct tensors, and which names alias another (tied weights)."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride())) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[prefix + name] = seen[key]
            continue
        tensors[prefix + name] = tensor.detach().to("cpu").contiguous().clone()
        if key is not None:
            seen[key] = prefix + name
    return tensors, aliases


def load_module_tensors(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str],
                        prefix: str, where: str) -> None:
    state = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
    for alias, target in aliases.items():
        if alias.startswith(prefix):
            state[alias[len(prefix):]] = tensors[target]
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(expected) & set(state) if tuple(expected[n].shape) != tuple(state[n].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:4]}" if missing else "",
            f"unexpected {unexpected[:4]}" if unexpected else "",
            "shape differs for " + ", ".join(f"{n} {tuple(state[n].shape)} vs {tuple(expected[n].shape)}" for n in wrong[:4])
            if wrong else "") if part)
        raise ArchiveError(f"{where}: the stored editor does not fit the one these hparams build ({detail})",
                           fix="use the hparams.yaml saved beside the archive, or train a new editor for this model")
    module.load_state_dict(state)


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=header)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ArchiveError(f"{path}: not a readable safetensors file ({exc})",
                           fix="train the editor again; a partial copy is the usual cause") from None
    metadata = {}
    for key, value in header.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return tensors, metadata


# --- archives: what apply() loads ------------------------------------------------------------------
def archive_file(archive) -> Path:
    path = Path(archive)
    if path.is_dir():
        path = path / EDITOR_FILE
    if not path.is_file():
        raise ArchiveError(f"{archive}: no trained editor there (expected {EDITOR_FILE})",
                           fix="pass the --out directory of `adapterkit train`, or its editor.safetensors")
    return path


def save_archive(path: Path, editor: torch.nn.Module, metadata: Mapping[str, Any]) -> None:
    tensors, aliases = module_tensors(editor)
    write_safetensors(path, tensors, {"format": ARCHIVE_FORMAT, "aliases": aliases, **metadata})


def read_archive(archive, method: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    path = archive_file(archive)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"{path}: not an adapterkit editor archive", fix="pass a directory written by `adapterkit train`")
    if str(metadata.get("method", "")).upper() != method.upper():
        raise ArchiveError(f"{path}: holds a {metadata.get('method')} editor, not a {method} one",
                           fix=f"point archive at a {method} editor, or set alg_name: {metadata.get('method')}")
    return tensors, metadata, path


def check_archive_fits(path: Path, metadata: Mapping[str, Any], *, architecture: str,
                       shapes: Mapping[str, Sequence[int]] | None, hparams: Mapping[str, Any],
                       structural_keys: Sequence[str]) -> None:
    """Raise ArchiveError naming each mismatch: architecture, edited weights and their shapes, structural hparams."""
    stored_arch = metadata.get("architecture")
    if stored_arch != architecture:
        raise ArchiveError(f"{path}: this editor was trained for the {stored_arch!r} architecture; the model is {architecture!r}",
                           fix=f"train an editor for this model (`adapterkit train MODEL --hparams ...`), or load a {stored_arch} model")
    if shapes is not None:
        stored = {n: list(s) for n, s in (metadata.get("inner_params") or {}).items()}
        wanted = {n: list(s) for n, s in shapes.items()}
        if stored != wanted:
            only_stored = sorted(set(stored) - set(wanted))
            only_wanted = sorted(set(wanted) - set(stored))
            reshaped = sorted(n for n in set(stored) & set(wanted) if stored[n] != wanted[n])
            parts = [f"trained on {only_stored}" if only_stored else "", f"hparams ask for {only_wanted}" if only_wanted else "",
                     "shapes differ: " + ", ".join(f"{n} {stored[n]} (archive) vs {wanted[n]} (model)" for n in reshaped)
                     if reshaped else ""]
            raise ArchiveError(f"{path}: the editor's inner_params do not match: " + "; ".join(p for p in parts if p),
                               fix="set inner_params to those in the hparams.yaml beside the archive, "
                                   "or train an editor for this model and these weights")
    stored_hp = metadata.get("hparams") or {}
    differing = [k for k in structural_keys if k in hparams and k in stored_hp and hparams[k] != stored_hp[k]]
    if differing:
        listing = ", ".join(f"{k}={hparams[k]!r} (archive: {stored_hp[k]!r})" for k in differing)
        raise ArchiveError(f"{path}: the hparams describe a different editor than the archive holds: {listing}",
                           fix="use the hparams.yaml saved beside the archive, or train a new editor with these hparams")


# --- the trainer ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_step: int
    best_value: float | None
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


@dataclass
class _Progress:
    step: int = 0
    best_value: float | None = None
    best_step: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


def train(task, train_requests: Sequence[EditRequest], val_requests: Sequence[EditRequest],
          hparams: Mapping[str, Any], out_dir, *, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train ``task.editor``; the best editor lands in ``out_dir/editor.safetensors``.

    ``on_step(step, info)`` is called after each optimiser step (a hook for logging, or for tests that
    interrupt a run).
    """
    settings = TrainSettings.from_hparams(hparams)
    out_dir = Path(out_dir)
    state_path = out_dir / STATE_FILE
    optimizer = torch.optim.Adam(task.param_groups())
    done = _Progress()
    if state_path.exists() and not resume:
        raise AdapterkitError(f"{out_dir} already holds a training run ({STATE_FILE})",
                              fix="pass resume=True (`adapterkit train --resume`) to continue it, or choose another output directory")
    if resume and state_path.exists():
        done = _load_state(state_path, task, optimizer, hparams)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / HPARAMS_FILE, yaml.safe_dump(_plain(hparams), sort_keys=False))
    if done.stopped_early or done.step >= settings.max_iters:
        return TrainResult(out_dir, done.step, done.best_step, done.best_value, done.stopped_early, done.history)

    bar = _progress_bar(settings, done.step, progress)
    info: dict = {}
    try:
        while done.step < settings.max_iters:
            episodes = [[train_requests[i] for i in batch_indices(len(train_requests), settings.batch_size,
                                                                   done.step * settings.accumulate_bs + k, settings.seed)]
                         for k in range(settings.accumulate_bs)]
            info = _optimise(task, optimizer, episodes, settings)
            done.step += 1
            bar.update(1)
            bar.set_postfix(_short(info, done.history[-1] if done.history else {}), refresh=False)
            if on_step is not None:
                on_step(done.step, info)
            if done.step % settings.val_every == 0 or done.step == settings.max_iters:
                _validate_and_checkpoint(task, optimizer, val_requests, settings, hparams, out_dir, done)
                bar.set_postfix(_short(info, done.history[-1]), refresh=True)
                if done.stopped_early:
                    break
    finally:
        bar.close()
    return TrainResult(out_dir, done.step, done.best_step, done.best_value, done.stopped_early, done.history)


def _optimise(task, optimizer, episodes, settings: TrainSettings) -> dict:
    """One optimiser step over ``episodes`` (each one batch of edits applied together), gradients averaged."""
    task.editor.train()
    optimizer.zero_grad(set_to_none=True)
    sums: dict = {}
    for batch in episodes:
        loss, info = task.train_step(batch)
        (loss / len(episodes)).backward()
        for key, value in {"loss": loss.item(), **info}.items():
            sums[key] = sums.get(key, 0.0) + value / len(episodes)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    if not torch.isfinite(grad_norm):
        raise AdapterkitError(f"the editor's gradient became {grad_norm.item()} (loss {sums['loss']})",
                              fix="lower lr / edit_lr / lr_lr in the hparams, or raise grad_clip")
    optimizer.step()
    return sums


def validate(task, val_requests, settings: TrainSettings) -> dict:
    task.editor.eval()
    sums, counts = {}, {}
    for batch in validation_batches(val_requests, settings):
        for key, value in task.validate(batch).items():
            sums[key] = sums.get(key, 0.0) + value * len(batch)
            counts[key] = counts.get(key, 0) + len(batch)
    return {f"{key}_val": sums[key] / counts[key] for key in sums}


def _validate_and_checkpoint(task, optimizer, val_requests, settings, hparams, out_dir: Path, done: _Progress) -> None:
    metrics = validate(task, val_requests, settings)
    if settings.early_stop_key not in metrics:
        raise AdapterkitError(f"early_stop_key {settings.early_stop_key!r} is not a validation metric; "
                              f"the validation gives {sorted(metrics)}",
                              fix=f"set early_stop_key to one of {sorted(metrics)}")
    value = metrics[settings.early_stop_key]
    done.history.append({"step": done.step, **metrics})
    improved = done.best_value is None or (value < done.best_value if settings.minimise else value > done.best_value)
    if improved:
        done.best_value, done.best_step = value, done.step
        save_archive(out_dir / EDITOR_FILE, task.editor,
                     {**task.archive_metadata(), "step": done.step, "best": {settings.early_stop_key: value}})
    done.stopped_early = done.step - done.best_step >= settings.early_stop_patience
    write_text_atomic(out_dir / HISTORY_FILE, json.dumps(done.history, indent=1))
    _save_state(out_dir / STATE_FILE, task, optimizer, hparams, done)


# --- trainer state ----------------------------------------------------------------------------------
def _save_state(path: Path, task, optimizer, hparams, done: _Progress) -> None:
    tensors, aliases = module_tensors(task.editor, prefix="editor.")
    opt_state = optimizer.state_dict()
    opt_scalars = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                opt_scalars[f"{index}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py_state = random.getstate()
    write_safetensors(path, tensors, {
        "format": STATE_FORMAT, "aliases": aliases, "hparams": _plain(hparams),
        "step": done.step, "best_value": done.best_value, "best_step": done.best_step,
        "stopped_early": done.stopped_early, "history": done.history,
        "param_groups": opt_state["param_groups"], "optim_scalars": opt_scalars,
        "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
    })


def _load_state(path: Path, task, optimizer, hparams) -> _Progress:
    tensors, meta = read_safetensors(path)
    if meta.get("format") != STATE_FORMAT:
        raise ArchiveError(f"{path}: not an adapterkit trainer state", fix="remove it, or pass another output directory")
    stored = meta.get("hparams") or {}
    current = _plain(hparams)
    changed = sorted(k for k in set(stored) | set(current)
                     if k not in RESUMABLE_CHANGES and stored.get(k) != current.get(k))
    if changed:
        listing = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ArchiveError(f"{path}: cannot resume with different hparams ({listing})",
                           fix=f"resume with the hparams.yaml saved in {path.parent}, or start a new run in another directory")
    load_module_tensors(task.editor, tensors, meta.get("aliases") or {}, "editor.", str(path))
    opt_state = {"param_groups": meta["param_groups"], "state": {}}
    for name, tensor in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[key] = tensor
    for name, value in (meta.get("optim_scalars") or {}).items():
        index, key = name.split(".", 1)
        opt_state["state"].setdefault(int(index), {})[key] = value
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = meta["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    return _Progress(step=meta["step"], best_value=meta["best_value"], best_step=meta["best_step"],
                     stopped_early=meta["stopped_early"], history=meta["history"])


# --- small helpers ----------------------------------------------------------------------------------
def _plain(hparams: Mapping[str, Any]) -> dict:
    """hparams as JSON/YAML-safe plain data."""
    return json.loads(json.dumps(dict(hparams), default=str))


def _progress_bar(settings: TrainSettings, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=settings.max_iters, initial=start, disable=not enabled, desc="training editor",
                dynamic_ncols=True, leave=True)


def _short(info: Mapping[str, Any], val: Mapping[str, Any]) -> dict:
    shown = {"loss": f"{info.get('loss', float('nan')):.3g}"}
    for key in ("edit/acc_val", "loc/acc_val", "rephrase/acc_val"):
        if key in val:
            shown[key.split("/")[0] + "_val"] = f"{val[key]:.2f}"
    return shown


# --- the CLI's entry point --------------------------------------------------------------------------
def train_editor(model, tok, hparams, train_path, val_path, out_dir, *, resume: bool = False, device=None,
                 progress: bool = True, **options) -> TrainResult:
    """Train the editor that ``hparams['alg_name']`` names (MEND, SERAC, or a plugin's trainable method)."""
    from ..hparams import load_hparams
    from ..registry import get_registry

    registry = get_registry()
    hp = load_hparams(hparams, registry)
    method = registry.method(hp["alg_name"])
    if not getattr(method, "trainable", False):
        raise AdapterkitError(f"{method.name} needs no training",
                              fix="train_editor is for trainable methods such as MEND and SERAC; edit with adapterkit.edit directly")
    return method.train(model, tok, hp, train_path, val_path, out_dir, resume=resume, device=device,
                        progress=progress, **options)
