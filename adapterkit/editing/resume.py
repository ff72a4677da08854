"""Checkpoints of the statistics pass, so that a killed run continues from the last one instead of starting again.

Every ``every`` documents of its share, each rank writes its running sums (``SecondMomentSum.state``: the float64
total and the float32 partial sum not yet folded into it), its token count and the number of its documents done,
atomically, to ``{first statistics file}.rank{R}-of-{W}.resume``. A run of the same pass (the same modules of the
same model, corpus, sample count, dtype, batch size, token limit, speed-up switch, rank and world size) finds the
checkpoint and continues with the next batch: the same batches in the same order, so its result is the
uninterrupted run's, bit for bit on one device. A checkpoint of another pass is ignored with a warning that names
what differs, never mixed in; it is replaced by this pass's first checkpoint. Each rank removes its own checkpoint,
and what a killed write of it left, once the statistics files are written.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..files.atomic import atomic_path, check_free_space, remove_stale_partials
from .moments import SecondMomentSum

FORMAT = "adapterkit-stats-resume/1"
MIN_INTERVAL = 1000  # documents: checkpoints of a shorter pass would cost more writing than they could save
CHECKPOINTS_PER_PASS = 10

log = logging.getLogger(__name__)


def default_interval(documents: int) -> int:
    """Documents between checkpoints where none is asked for: a tenth of the pass, at least ``MIN_INTERVAL``."""
    return max(MIN_INTERVAL, math.ceil(documents / CHECKPOINTS_PER_PASS))


def checkpoint_path(final: Path, rank: int, world: int) -> Path:
    return final.with_name(f"{final.name}.rank{rank}-of-{world}.resume")


def remove_leftover_checkpoints(final: Path) -> list[Path]:
    """Every rank's checkpoint beside ``final``, a statistics file now written, that a run killed after the file was
    written (or while other ranks were removing theirs) left: its pass is over. Returns what was removed."""
    return [path for path in sorted(final.parent.glob(f"{final.name}.rank*-of-*.resume")) if _remove_checkpoint(path)]


def _remove_checkpoint(path: Path) -> bool:
    """Delete the checkpoint ``path`` and what a killed write of it left (no later write of it would clear that);
    whether the checkpoint itself was there."""
    try:
        path.unlink()
        found = True
    except FileNotFoundError:
        found = False
    remove_stale_partials(path)
    return found


@dataclass
class Resumed:
    """Where a checkpoint left the pass: documents done, tokens counted, each module's running sum."""
    done: int
    count: int
    states: dict[str, dict]


class PassCheckpoint:
    """The checkpoint of one rank's pass: ``key`` says which pass it is (everything its numbers depend on),
    ``every`` how many documents lie between two (0: none are written), ``total`` the documents of the share."""

    def __init__(self, final: Path, key: Mapping, every: int, total: int):
        self.path = checkpoint_path(final, key["rank"], key["world"])
        self.final = final
        self.key = json.loads(json.dumps(key))  # as a checkpoint gives it back: lists, not tuples
        self.every = int(every)
        self.total = int(total)
        self.last = 0

    # --- finding ------------------------------------------------------------------------------
    def load(self) -> Resumed | None:
        """This pass's checkpoint, or None (no checkpoint, or one of another pass: a warning says what differs)."""
        if self.key["rank"] == 0:
            self._warn_about_other_launches()
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in data.files if name != "meta"}
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("ignoring %s: not a readable checkpoint (%s: %s); the pass starts from the beginning",
                        self.path, type(exc).__name__, exc)
            return None
        differences = _differences(meta.get("key") or {}, self.key)
        if differences:
            log.warning("ignoring %s: it was written by another statistics pass (%s); this pass starts from the "
                        "beginning and replaces it", self.path, "; ".join(differences))
            return None
        states = {}
        for i, module in enumerate(self.key["modules"]):
            held = meta["states"][module]
            states[module] = {"sum": _tensor(arrays.get(f"{i}.sum")), "partial": _tensor(arrays.get(f"{i}.partial")),
                              "pending": held["pending"], "bounds": held["bounds"]}
        self.last = int(meta["done"])
        log.info("resuming the statistics pass from %s: %d of %d documents done (%d tokens), written %s",
                 self.path, meta["done"], self.total, meta["count"], meta.get("created", "at an unknown time"))
        return Resumed(int(meta["done"]), int(meta["count"]), states)

    def _warn_about_other_launches(self) -> None:
        pattern = f"{self.final.name}.rank*-of-*.resume"
        others = sorted(p for p in self.final.parent.glob(pattern)
                        if not p.name.endswith(f"-of-{self.key['world']}.resume")) if self.final.parent.is_dir() else []
        if others:
            log.warning("ignoring %s: written by a launch of another number of processes (this one has %d); a "
                        "checkpoint is only continued by a launch of the same size",
                        ", ".join(str(p) for p in others), self.key["world"])

    # --- writing ------------------------------------------------------------------------------
    def due(self, done: int) -> bool:
        return self.every > 0 and done < self.total and done - self.last >= self.every

    def save(self, sums: Mapping[str, SecondMomentSum], count: int, done: int) -> None:
        arrays, states = {}, {}
        for i, module in enumerate(self.key["modules"]):
            state = sums[module].state()
            for part in ("sum", "partial"):
                if state[part] is not None:
                    arrays[f"{i}.{part}"] = state[part].numpy()
            states[module] = {"pending": state["pending"], "bounds": state["bounds"]}
        meta = {"format": FORMAT, "key": self.key, "done": done, "count": count, "states": states,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        check_free_space(self.path, sum(a.nbytes for a in arrays.values()), what="statistics checkpoint")
        with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
        self.last = done

    def remove(self) -> None:
        _remove_checkpoint(self.path)


def _tensor(array) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.array(array))


def _differences(found: Mapping, wanted: Mapping) -> list[str]:
    """What differs between a checkpoint's key and this pass's, in words."""
    return [f"{name} {_short(found.get(name))}, not {_short(wanted.get(name))}"
            for name in sorted(set(found) | set(wanted)) if found.get(name) != wanted.get(name)]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
