"""One trainer for the learned editors (MEND, SERAC): the loop, validation, early stopping, checkpoints, resume.

The batches come from batches.py, the losses the tasks use from losses.py, the archive format from archive.py.

A method hands the trainer a task (``EditorTask`` below: the editor, its parameter groups, one
training step, validation, the archive's metadata) and its settings (``TrainedEditorSettings``).

Files in ``out_dir`` (every write atomic, through :func:`adapterkit.files.atomic.atomic_path`):

    editor.safetensors         the best editor so far (what ``archive:`` points at), with its metadata
    hparams.yaml               the settings it was trained with (``settings.to_dict()``: defaults filled in)
    trainer_state.safetensors  the last checkpoint: editor, optimizer state, RNG states, step, best metric
    validation.json            every validation's metrics

The batch order is a function of the seed and the step, and every random state is checkpointed, so
``resume=True`` after an interruption ends with the same editor, bit for bit, as an uninterrupted run.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import torch
import yaml

from ..checkpoints.devices import check_device
from ..errors import AdapterkitError, ArchiveError
from ..files.atomic import write_text_atomic
from ..requests import EditRequest
from .archive import (EDITOR_FILE, load_module_tensors, module_tensors, read_safetensors, save_archive, write_safetensors)
from .batches import batch_indices, validation_batches

if TYPE_CHECKING:
    from ..settings.methods import TrainedEditorSettings

STATE_FILE = "trainer_state.safetensors"
HPARAMS_FILE = "hparams.yaml"
HISTORY_FILE = "validation.json"
STATE_FORMAT = "adapterkit-trainer-state/1"
# settings that may change between an interrupted run and its resumption without changing its results
RESUMABLE_CHANGES = ("max_iters", "early_stop_patience", "device", "archive", "model_name")


# --- the run's device and seeds -------------------------------------------------------------------

class EditorTask(Protocol):
    """What a trained method hands the shared trainer (editing/training.py) for one training run."""

    editor: torch.nn.Module                 # the module being trained: its state is the archive

    def param_groups(self) -> list[dict]:
        """Adam parameter groups over the editor's parameters."""

    def train_step(self, requests: Sequence[EditRequest]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch of edits, to differentiate, and named values to log."""

    def validate(self, requests: Sequence[EditRequest]) -> dict[str, float]:
        """Named metrics of one validation batch of edits (the trainer appends ``_val``)."""

    def archive_metadata(self) -> dict[str, Any]:
        """Saved beside the editor's tensors: method, architecture, what the editor's shape depends on, and
        ``hparams`` (``settings.to_dict()``), which ``TrainedEditMethod.load_editor`` checks."""


def resolve_device(requested, model=None) -> torch.device:
    """``None``: where the model is; ``"auto"``: a GPU when present; an int: that GPU (EasyEdit's form)."""
    if requested is None:
        return next(model.parameters()).device if model is not None else torch.device("cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(requested, origin="device", on_cpu="--device cpu (or `device: cpu` in the hparams)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# --- the trainer ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """Where a run stands (while it trains) or ended: its step, the best validation so far, early stopping."""
    out_dir: Path
    step: int = 0
    best_step: int = 0
    best_value: float | None = None
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


def train(task: EditorTask, train_requests: Sequence[EditRequest], val_requests: Sequence[EditRequest],
          settings: TrainedEditorSettings, out_dir, *, resume: bool = False, progress: bool = True,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train ``task.editor``; the best editor lands in ``out_dir/editor.safetensors``.

    ``on_step(step, info)`` is called after each optimiser step (a hook for logging, or for tests that
    interrupt a run).
    """
    out_dir = Path(out_dir)
    state_path = out_dir / STATE_FILE
    optimizer = torch.optim.Adam(task.param_groups())
    done = TrainResult(out_dir)
    if state_path.exists() and not resume:
        raise AdapterkitError(f"{out_dir} already holds a training run ({STATE_FILE})",
                              fix="pass resume=True (`adapterkit train --resume`) to continue it, or choose another output directory")
    if resume and state_path.exists():
        done = _load_state(state_path, task, optimizer, settings)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / HPARAMS_FILE, yaml.safe_dump(_plain(settings), sort_keys=False))
    if done.stopped_early or done.step >= settings.max_iters:
        return done

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
                _validate_and_checkpoint(task, optimizer, val_requests, settings, out_dir, done)
                bar.set_postfix(_short(info, done.history[-1]), refresh=True)
                if done.stopped_early:
                    break
    finally:
        bar.close()
    return done


def _optimise(task, optimizer, episodes, settings: TrainedEditorSettings) -> dict:
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


def validate(task, val_requests, settings: TrainedEditorSettings) -> dict:
    task.editor.eval()
    sums, counts = {}, {}
    for batch in validation_batches(val_requests, settings):
        for key, value in task.validate(batch).items():
            sums[key] = sums.get(key, 0.0) + value * len(batch)
            counts[key] = counts.get(key, 0) + len(batch)
    return {f"{key}_val": sums[key] / counts[key] for key in sums}


def _validate_and_checkpoint(task, optimizer, val_requests, settings, out_dir: Path, done: TrainResult) -> None:
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
    _save_state(out_dir / STATE_FILE, task, optimizer, settings, done)


# --- trainer state ----------------------------------------------------------------------------------
def _save_state(path: Path, task, optimizer, settings, done: TrainResult) -> None:
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
        "format": STATE_FORMAT, "aliases": aliases, "hparams": _plain(settings),
        "step": done.step, "best_value": done.best_value, "best_step": done.best_step,
        "stopped_early": done.stopped_early, "history": done.history,
        "param_groups": opt_state["param_groups"], "optim_scalars": opt_scalars,
        "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
    })


def _load_state(path: Path, task, optimizer, settings) -> TrainResult:
    tensors, meta = read_safetensors(path)
    if meta.get("format") != STATE_FORMAT:
        raise ArchiveError(f"{path}: not an adapterkit trainer state", fix="remove it, or pass another output directory")
    stored = meta.get("hparams") or {}
    current = _plain(settings)
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
    return TrainResult(path.parent, step=meta["step"], best_value=meta["best_value"], best_step=meta["best_step"],
                       stopped_early=meta["stopped_early"], history=meta["history"])


# --- small helpers ----------------------------------------------------------------------------------
def _plain(settings: TrainedEditorSettings) -> dict:
    """The settings that ran as JSON/YAML-safe plain data."""
    return json.loads(json.dumps(settings.to_dict(), default=str))


def _progress_bar(settings: TrainedEditorSettings, start: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=settings.max_iters, initial=start, disable=not enabled, desc="training editor",
                dynamic_ncols=True, leave=True)


def _short(info: Mapping[str, Any], val: Mapping[str, Any]) -> dict:
    shown = {"loss": f"{info.get('loss', float('nan')):.3g}"}
    for key in ("edit/acc_val", "loc/acc_val", "rephrase/acc_val"):
        if key in val:
            shown[key.split("/")[0] + "_val"] = f"{val[key]:.2f}"
    return shown

