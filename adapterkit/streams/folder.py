"""A stream's folder: ``manifest.json`` and one safetensors file per batch.

    stream/
      manifest.json                     format, the model's fingerprint, the hparams, the batches and their files
      batches/00001-<id>.safetensors    batch 1: its deltas (delta/<weight>), its carried keys (keys/<weight>)
      batches/00002-<id>.safetensors    ...
      base/<id>.safetensors             with ``undo_depth``: the touched weights after the batches folded into the
                                        base (``weight/<weight>``); a folded batch's file holds only its keys

A batch file is written once, under a name no other batch has, and never rewritten. Saving writes the files
that are new, then replaces the manifest in one rename, then removes files the new manifest does not list: a save
killed at any point leaves the previous manifest and every file it lists, so the folder loads as it was.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import OutputError, StreamError
from ..editing.result import fingerprint
from ..evaluation.fingerprints import config_fingerprint

FORMAT = "adapterkit-stream/1"
MANIFEST = "manifest.json"


def model_identity(model, originals: dict[str, torch.Tensor]) -> dict:
    """The model a stream belongs to: its config's fingerprint and its touched weights' originals' hashes."""
    return {**config_fingerprint(model.config), "originals": {n: fingerprint(t) for n, t in sorted(originals.items())}}


BASE_PREFIX = "weight/"


def base_file(ledger) -> str | None:
    return f"base/{ledger.base_id}.safetensors" if ledger.base_at else None


def manifest_of(stream) -> dict:
    ledger = stream.ledger
    batches = ledger.batches
    return {
        "format": FORMAT,
        "method": stream.method.name,
        "hparams": json.loads(json.dumps(stream.hparams, default=str)),
        "model": model_identity(stream.model, ledger.originals),
        "batch_count": len(batches),
        "requests_per_batch": [b.requests for b in batches],
        "undo_depth": stream.undo_depth,
        "base": {"after_batch": ledger.base_at, "file": base_file(ledger)} if ledger.base_at else None,
        "batches": [{"number": b.number, "id": b.id, "file": b.file_name, "requests": b.requests, "weights": b.weights,
                     "folded": b.folded} for b in batches],
        "carried": {w: stream.carried.count(w) for w in stream.carried.weights},
        "files": [name for name in [base_file(ledger)] + [b.file_name for b in batches] if name],
    }


def write(folder, stream, *, keep_in_memory: bool = True) -> Path:
    """Save ``stream`` into ``folder`` (created if missing); returns the manifest's path."""
    from safetensors.torch import save_file

    from ..files.atomic import atomic_path, check_writable, exclusive, write_text_atomic

    folder = Path(folder)
    check_writable(folder, what="stream folder", directory=True)
    refuse_foreign(folder, stream)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / ".lock"):
        manifest = manifest_of(stream)
        ledger = stream.ledger
        base = base_file(ledger)
        if base and not (folder / base).is_file():
            (folder / "base").mkdir(exist_ok=True)
            with atomic_path(folder / base) as tmp:
                save_file({BASE_PREFIX + n: t.contiguous() for n, t in ledger.base.items()}, str(tmp),
                          metadata={"format": FORMAT, "after_batch": str(ledger.base_at)})
        for batch in ledger.batches:
            if batch.file_name is None:
                continue
            target = folder / batch.file_name
            if not target.is_file():
                tensors = batch.load()
                with atomic_path(target) as tmp:
                    save_file(tensors, str(tmp), metadata={"format": FORMAT, "batch": str(batch.number)})
        write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        listed = set(manifest["files"])
        for kind in ("batches", "base"):
            for stale in (folder / kind).glob("*.safetensors"):
                if f"{kind}/{stale.name}" not in listed:
                    stale.unlink(missing_ok=True)
        if not keep_in_memory:
            for batch in ledger.batches:
                if not batch.folded:
                    batch.tensors, batch.source = None, folder / batch.file_name
    return folder / MANIFEST


def refuse_foreign(folder: Path, stream) -> None:
    """Refuse to save into a folder that holds other files, or another model's or other settings' stream."""
    if not folder.is_dir():
        return
    if not (folder / MANIFEST).is_file():
        if all(entry.name in ("batches", "base", ".lock") or entry.name.startswith(f".{MANIFEST}.") for entry in folder.iterdir()):
            return  # empty, or a first save that was interrupted
        raise OutputError(f"{folder}: holds files but no {MANIFEST}, so it is not a stream folder to save into",
                          fix="choose an empty or new folder for the stream")
    previous = read_manifest(folder)
    check_settings(previous, stream.hparams, folder)
    if {k: v for k, v in previous["model"].items() if k != "originals"} != \
            {k: v for k, v in model_identity(stream.model, {}).items() if k != "originals"}:
        raise StreamError(f"{folder}: holds a stream of another model; saving would replace it",
                          fix="choose another folder for this stream, or delete that one")


def read_manifest(folder) -> dict:
    from ..files.safe_load import load_json

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise StreamError(f"{folder}: no {MANIFEST}, so it is not a saved stream",
                          fix="pass the folder that EditStream.save or `adapterkit edit --stream` wrote")
    manifest = load_json(path, error=StreamError, what="stream manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StreamError(f"{path}: not a stream manifest of this version (format {FORMAT})",
                          fix="pass a folder that this version of adapterkit saved, or start a new stream")
    batches = manifest.get("batches")
    if not isinstance(batches, list) or [b.get("number") for b in batches] != list(range(1, len(batches) + 1)):
        raise StreamError(f"{path}: its batches are not numbered 1, 2, ... in order", fix="restore the folder from a copy")
    base = manifest.get("base")
    if base is not None and not (isinstance(base, dict) and isinstance(base.get("after_batch"), int)
                                 and 0 < base["after_batch"] <= len(batches) and isinstance(base.get("file"), str)):
        raise StreamError(f"{path}: its base is not a batch number and a file", fix="restore the folder from a copy")
    listed = [b["file"] for b in batches if b.get("file")] + ([base["file"]] if base else [])
    missing = [name for name in listed if not (folder / name).is_file()]
    if missing:
        raise StreamError(f"{folder}: the manifest lists {len(missing)} batch file(s) that are missing, such as {missing[0]}",
                          fix="restore the folder from a copy; a stream folder is only whole with every file it lists")
    return manifest


def read_base(manifest: dict, folder: Path, ledger) -> None:
    """The saved base of a stream whose early batches are folded (``undo_depth``) into ``ledger``."""
    from safetensors.torch import load_file

    base = manifest.get("base")
    if not base:
        return
    tensors = load_file(str(folder / base["file"]))
    ledger.base = {n[len(BASE_PREFIX):]: t for n, t in tensors.items() if n.startswith(BASE_PREFIX)}
    ledger.base_at, ledger.base_id = int(base["after_batch"]), Path(base["file"]).stem


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {json.dumps(old.get(k), default=str)[:50]} in the stream, {json.dumps(new.get(k), default=str)[:50]} now"
            for k in keys if old.get(k) != new.get(k)]


def check_settings(manifest: dict, hparams: dict, folder) -> None:
    differences = _differences(manifest["hparams"], json.loads(json.dumps(hparams, default=str)))
    if differences:
        shown = "; ".join(differences[:3]) + (f" (and {len(differences) - 3} more)" if len(differences) > 3 else "")
        raise StreamError(f"{folder}: the stream was built with other settings: {shown}",
                          fix="continue it with the hparams it was started with (its manifest.json holds them), "
                              "or start a new stream in another folder")


def check_model(manifest: dict, model, folder) -> None:
    """The model must be the one the stream started on, as it was before the stream's first batch."""
    expected = manifest["model"]
    here = config_fingerprint(model.config)
    if here["config_sha256"] != expected.get("config_sha256"):
        raise StreamError(f"{folder}: the stream was built on another model ({expected.get('model_type')}, config "
                          f"sha256 {str(expected.get('config_sha256'))[:12]}), this one is {here['model_type']} "
                          f"(config sha256 {here['config_sha256'][:12]})",
                          fix="load the stream with the model it was started on, or start a new stream in another folder")
    for name, digest in expected.get("originals", {}).items():
        try:
            weight = model.get_parameter(name)
        except AttributeError:
            raise StreamError(f"{folder}: the stream edits {name}, which this model does not have",
                              fix="load the stream with the model it was started on") from None
        if fingerprint(weight) != digest:
            raise StreamError(f"{folder}: {name} is not the weight the stream started from: another checkpoint, or "
                              "one already edited (an --out of an earlier run?)",
                              fix="load the stream onto the unedited model it was started on; it replays its batches itself")
