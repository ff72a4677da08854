"""``EditStream``: lifelong editing, a stream of batches of edits applied one on top of the last.

    stream = adapterkit.EditStream(model, tok, "alphaedit.yaml")
    for batch in batches:
        stream.apply(batch)            # what the method carries across batches is kept (carried.py)
    stream.save("stream/")             # folder.py: continue later, in another process
    stream.restore(to=3)               # ledger.py: back to the weights after batch 3, bit for bit
    stream = adapterkit.EditStream.load("stream/", model, tok)   # the unedited model; the batches are replayed
"""
from __future__ import annotations

from os import PathLike

import torch

from ..errors import AdapterkitError, UnsupportedMethodError
from . import folder as stream_folder
from ..editing.result import KEEP_PLACES
from .carried import CarriedState
from .ledger import Batch, Ledger


def checked_undo_depth(value):
    """``value`` if it is None or a whole number of batches from 0, else refused."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise AdapterkitError(f"undo_depth={value!r} is not a number of batches",
                              fix="pass None (every batch stays undoable) or a whole number from 0")
    return value


class EditStream:
    """Batches of edits applied one after another to ``model``, each undoable, the whole saveable.

    ``hparams``: a hyperparameter file, a dict or built settings, fixed for the stream's life. ``keep_in_memory``:
    keep every batch's deltas in memory (on the CPU); False reads them back from the folder of the last ``save``
    instead (a loaded stream reads them from its folder), which keeps memory flat over a long stream.
    ``carried_on``: where the earlier edits' keys' second moments live (methods that carry them: AlphaEdit, MEMIT
    and PMET with ``stream_preserve_edits``), one [in, in] float64 matrix per edited weight: ``"device"`` (each
    weight's own, the default: the update reads it where it is solved) or ``"cpu"`` (host memory, for an
    accelerator without room for them; each batch then moves them to it and folds its keys in on the CPU).
    ``undo_depth``: how many of the latest batches ``restore`` can take back (None: all of them). Older batches are
    folded into a base, the touched weights as they were then, so a long stream's memory and folder stop growing by
    a delta per batch (on a 7B model, 0.9 GB a batch); what they carry for later batches is kept.
    """

    def __init__(self, model, tok, hparams, *, keep_in_memory: bool = True, hparams_source: str | None = None,
                 carried_on: str = "device", undo_depth: int | None = None):
        from ..arch.registry import get_registry
        from ..settings.hparams import load_settings

        registry = get_registry()
        self.model, self.tok = model, tok
        self.settings = load_settings(hparams, registry)
        self.method = registry.method(self.settings.alg_name)
        self.hparams = self.settings.to_dict()
        self.hparams_source = hparams_source or (str(hparams) if isinstance(hparams, (str, PathLike)) else None)
        self.keep_in_memory = keep_in_memory
        if carried_on not in KEEP_PLACES:
            raise AdapterkitError(f"carried_on={carried_on!r} is not a place to keep the carried keys' moments",
                                  fix="use 'device' (beside each edited weight, the default) or 'cpu' (host memory)")
        self.carried_on = carried_on
        self.undo_depth = undo_depth
        self.ledger = Ledger()
        self.carried = self._carried()

    def _carried(self, batches_keys=()) -> CarriedState:
        """The carried state after ``batches_keys`` (oldest first), each moment where ``carried_on`` says."""
        if self.carried_on == "cpu":
            return CarriedState.rebuilt(batches_keys)
        return CarriedState.rebuilt(batches_keys, place=lambda weight: self.model.get_parameter(weight).device)

    # --- what it holds ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ledger.batches)

    @property
    def requests_per_batch(self) -> list[int]:
        return [b.requests for b in self.ledger.batches]

    @property
    def carries_state(self) -> bool:
        """Whether the method keeps state across batches under these settings (EditMethod.carries_state)."""
        return self.method.carries_state(self.settings)

    @property
    def touched(self) -> list[str]:
        return list(self.ledger.originals)

    @property
    def undo_depth(self) -> int | None:
        """How many of the latest batches ``restore`` can take back (None: all); a new value holds from the next
        batch on."""
        return self._undo_depth

    @undo_depth.setter
    def undo_depth(self, value: int | None) -> None:
        self._undo_depth = checked_undo_depth(value)

    @property
    def earliest_restorable(self) -> int:
        """The earliest point ``restore(to=)`` reaches: 0, or the last batch folded into the base (``undo_depth``)."""
        return self.ledger.base_at

    # --- editing ---------------------------------------------------------------------------------
    def apply(self, requests, *, evaluate: bool = False, say=None, requests_source: str = "request", archive=None):
        """Apply one batch on top of the previous ones; returns its EditResult (metrics where ``evaluate``).
        ``archive``: a trained editor (MEND) in place of the hparams' ``archive``.
        Undo it with ``restore(to=len(stream) - 1)``, not with the result's own ``restore``."""
        from .. import api

        carried = self.carried if self.carries_state else None
        try:
            result = api.edit(self.model, self.tok, requests, self.settings, evaluate=evaluate, say=say,
                              hparams_source=self.hparams_source, requests_source=requests_source, carried=carried,
                              archive=archive)
        except BaseException:
            self.carried.discard()
            raise
        if result.answerer is not self.model:
            result.restore(force=True)
            self.carried.discard()
            raise UnsupportedMethodError(
                f"{self.method.name} answers through a wrapper around the model, not through edited weights, so its "
                "edits cannot be kept as a stream of weight changes",
                fix="use a method that edits weights (AlphaEdit, MEMIT, PMET, ROME, MEND) for a stream")
        keys = self.carried.commit() if carried is not None else {}
        if self.undo_depth == 0:
            self.ledger.fold(len(self))  # batches kept while a larger depth was set
            self.ledger.record_folded(self.model, result, keys)
        else:
            self.ledger.record(self.model, result, keys)
            if self.undo_depth is not None:
                self.ledger.fold(len(self) - self.undo_depth)
        return result

    @torch.no_grad()
    def restore(self, to: int = 0) -> None:
        """Put the weights back as they were after batch ``to`` (0: before the first), bit for bit; the later
        batches and what they carried are forgotten."""
        if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to <= len(self):
            raise AdapterkitError(f"restore(to={to!r}): the stream holds {len(self)} batch(es)",
                                  fix=f"pass a whole number from {self.earliest_restorable} to {len(self)}")
        if to < self.earliest_restorable:
            raise AdapterkitError(
                f"restore(to={to}): batches 1 to {self.earliest_restorable} are folded into the stream's base"
                + (f" (undo_depth={self.undo_depth} keeps the last {self.undo_depth} undoable)"
                   if self.undo_depth is not None else "")
                + f", so the weights before batch {self.earliest_restorable + 1} are not kept",
                fix=f"restore to a point from {self.earliest_restorable} to {len(self)}; to go further back, start "
                    "the stream with a larger undo_depth (None keeps every batch)")
        self.ledger.write_into(self.model, self.ledger.weights_after(to))
        self.ledger.truncate(to)
        self.carried = self._carried(b.keys() for b in self.ledger.batches)

    @torch.no_grad()
    def as_edit_result(self):
        """The whole stream as one EditResult against the model before it: ``save`` it for ``apply_deltas``."""
        from ..editing.result import EditResult, _delta_dtype

        result = EditResult(model=self.model, hparams=self.hparams)
        for name, original in self.ledger.originals.items():
            weight = self.model.get_parameter(name).detach().cpu()
            wide = _delta_dtype(weight.dtype)
            result.originals[name] = original
            result.deltas[name] = weight.to(wide) - original.to(wide)
        result.answerer = self.model
        return result

    # --- saving and loading ----------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the stream into the folder ``path``; a save killed midway leaves the previous save loadable."""
        stream_folder.write(path, self, keep_in_memory=self.keep_in_memory)

    @classmethod
    @torch.no_grad()
    def load(cls, path, model, tok, hparams=None, *, keep_in_memory: bool = False,
             hparams_source: str | None = None, carried_on: str = "device") -> "EditStream":
        """The stream saved in ``path``, on ``model`` as it was before the stream (the unedited checkpoint): the
        batches are applied again, so the weights are the saved stream's, bit for bit. ``hparams``: checked against
        the stream's (default: the stream's own). The stream keeps the ``undo_depth`` it was saved with (set
        ``stream.undo_depth`` to change it from the next batch on)."""
        from pathlib import Path

        from ..editing.result import host_copy

        path = Path(path)
        manifest = stream_folder.read_manifest(path)
        stream = cls(model, tok, manifest["hparams"] if hparams is None else hparams, keep_in_memory=keep_in_memory,
                     hparams_source=hparams_source, carried_on=carried_on, undo_depth=manifest.get("undo_depth"))
        stream_folder.check_settings(manifest, stream.hparams, path)
        stream_folder.check_model(manifest, model, path)
        for entry in manifest["batches"]:
            folded = bool(entry.get("folded"))
            batch = Batch(number=entry["number"], requests=entry["requests"], weights=list(entry["weights"]),
                          id=entry["id"], source=path / entry["file"] if entry["file"] else None, folded=folded)
            if keep_in_memory or folded:
                batch.tensors = batch.load()
            stream.ledger.batches.append(batch)
        stream.ledger.originals = {n: host_copy(model.get_parameter(n)) for n in manifest["model"]["originals"]}
        stream_folder.read_base(manifest, path, stream.ledger)
        stream.ledger.write_into(model, stream.ledger.weights_after(len(stream)))
        stream.carried = stream._carried(b.keys() for b in stream.ledger.batches)
        return stream
