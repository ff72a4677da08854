"""Second moments E[k k^T] of a rewrite module's input keys over a text corpus (ROME's ``layer_stats``).

Files live where EasyEdit and ROME keep them, ``{stats_dir}/{model_name}/{corpus}_stats/
{module}_{mom2_dtype}_mom2_{mom2_n_samples}.npz``, with their keys (``mom2.mom2``, ``mom2.count``) plus
``adapterkit.meta``: the model identity (a config hash and a fingerprint of the layer's ``mlp_in``
weight, which locate-then-edit methods never change), the module, the sample count and dtype, and the
provenance: the corpus and date it was computed from, or the file, sha256 and date it was imported from.
A file whose identity disagrees is refused; a ROME/EasyEdit file without it is accepted with a warning
that it is unverified, or imported explicitly with ``import_npz``. Reused files are reported (logger
``adapterkit.editing.stats``) with their path and provenance.

``{corpus}`` is ``mom2_dataset`` when the hparams name their corpus. The published ``wikipedia`` only says
what the papers used: statistics computed from a local corpus then go to a folder named after that corpus,
and without a corpus, a file in ``wikipedia_stats`` (EasyEdit's layout) is used first, else the one file
for the module in any ``*_stats`` folder of the model (several: an error asking to choose by mom2_dataset).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import re
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from ..checkpoints.first_layers import full_num_layers
from ..checkpoints.placement import readable
from ..errors import StatsError
from ..files.atomic import atomic_path, check_free_space
from ..files.safe_load import load_json, parse_json
from ..settings.methods import LocateThenEditSettings
from . import speedups
from .hooks import frozen, run, trace
from .moments import SecondMomentSum
from .resume import PassCheckpoint, default_interval, remove_leftover_checkpoints
from .ranks import ALONE, Ranks
from .tokens import model_device, pad_id, pad_rows

FORMAT = "adapterkit-stats/1"
HOW_TO_SUPPLY = ("compute them once with `adapterkit stats MODEL --hparams FILE --corpus FILE` (a local .txt, .jsonl, "
                 ".parquet or saved `datasets` directory), set `mom2_corpus: FILE` in the hparams to compute them on "
                 "first use, or set `mom2_adjustment: false` (ROME), which needs no statistics")
DEFAULT_MAX_LENGTH = 1024  # tokens per document where the declaration names no config.max_positions key
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}

PUBLISHED_DATASET = LocateThenEditSettings.published_defaults()["mom2_dataset"]

log = logging.getLogger(__name__)
_moment_cache: dict = {}


# --- identities ---------------------------------------------------------------------------------
def config_hash(model, spec) -> str:
    """The shape of the checkpoint: a model loaded with only its first layers (``load_first_layers``) hashes as
    the whole one, so that its statistics serve an edit of the whole model."""
    config = model.config
    shape = {"model_type": getattr(config, "model_type", None), "num_layers": full_num_layers(model, spec),
             "hidden_size": spec.hidden_size(config), "intermediate_size": spec.intermediate_size(config),
             "vocab_size": spec.vocab_size(config)}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def weight_fingerprint(tensor: torch.Tensor, samples: int = 1 << 16) -> str:
    """A hash of evenly spaced elements (as float32) with the shape: cheap, and different for different weights."""
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // samples)
    picked = flat[::step][:samples].to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(str(tuple(tensor.shape)).encode())
    digest.update(picked.tobytes())
    return digest.hexdigest()[:16]


def model_identity(model, spec, layer: int) -> dict:
    role = "mlp_in" if spec.has_role("mlp_in") else "embed"
    name = spec.weight_name(role, layer if role == "mlp_in" else None)
    return {"config_hash": config_hash(model, spec), "weight": name,
            "weight_fingerprint": weight_fingerprint(readable(model, name))}


def corpus_identity(corpus: str | Path) -> str:
    path = Path(corpus).resolve()
    if not path.exists():
        raise StatsError(f"corpus {corpus} does not exist", fix=HOW_TO_SUPPLY)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256(str(path).encode())
    for file in files:
        info = file.stat()
        digest.update(f"{file.relative_to(path.parent)}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def model_name(model, spec, settings: LocateThenEditSettings) -> str:
    named = str(settings.model_name or getattr(model.config, "_name_or_path", "") or "").rstrip("/")
    return Path(named).name or f"{spec.name}-{config_hash(model, spec)[:8]}"


def stats_path(stats_dir, name: str, dataset: str, module: str, dtype: str, n_samples: int) -> Path:
    """ROME / EasyEdit naming."""
    return Path(stats_dir) / name / f"{dataset}_stats" / f"{module}_{dtype}_mom2_{n_samples}.npz"


def corpus_name(settings: LocateThenEditSettings, corpus=None) -> str:
    """The corpus part of the statistics folder (``<name>_stats``): ``mom2_dataset`` when the hparams name the
    corpus, or, where they keep the published name, the local corpus's own file or directory name."""
    if corpus is None or settings.mom2_dataset != PUBLISHED_DATASET:
        return settings.mom2_dataset
    path = Path(corpus)
    own = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", own).strip(".-") or settings.mom2_dataset


@dataclass(frozen=True)
class StatsRequest:
    """One file's worth: a module at a layer with the settings' corpus name, sample count and dtype."""
    module: str
    layer: int
    path: Path
    identity: dict
    n_samples: int
    dtype: str


def stats_requests(model, spec, settings: LocateThenEditSettings, stats_dir, layers=None, templates=None,
                   n_samples=None, corpus=None) -> list[StatsRequest]:
    """The files for ``layers`` x ``templates``, in the folder of ``corpus`` (see corpus_name)."""
    templates = templates or settings.rewrite_templates
    layers = settings.layers if layers is None else layers
    n = int(n_samples or settings.mom2_n_samples)
    dtype = settings.mom2_dtype
    name, dataset = model_name(model, spec, settings), corpus_name(settings, corpus)
    return [StatsRequest(t.format(layer), layer, stats_path(stats_dir, name, dataset, t.format(layer), dtype, n),
                         model_identity(model, spec, layer), n, dtype)
            for layer in layers for t in templates]


# --- corpora ------------------------------------------------------------------------------------
def read_corpus(corpus) -> Iterator[str]:
    """Documents of a local corpus: .txt (one per line), .jsonl / .json ("text"), .parquet, a saved `datasets` dir,
    or a directory of .txt files (one document each)."""
    path = Path(corpus)
    if not path.exists():
        raise StatsError(f"corpus {path} does not exist", fix=HOW_TO_SUPPLY)
    if path.is_dir():
        if any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            yield from _saved_dataset(path)
        else:
            for file in sorted(path.glob("*.txt")):
                yield "\n".join(_text_lines(file))
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for number, line in enumerate(_text_lines(path), 1):
            if line.strip():
                yield _text_field(parse_json(line, f"{path}:{number}", error=StatsError, what="corpus", one_line=True),
                                  f"{path}:{number}")
    elif suffix == ".json":
        items = load_json(path, error=StatsError, what="corpus")
        if not isinstance(items, list):
            raise StatsError(f"{path}: a .json corpus is a list of strings or {{\"text\": ...}} objects, found {type(items).__name__}",
                             fix="write a JSON list, or one {\"text\": ...} object per line in a .jsonl file")
        for i, item in enumerate(items):
            yield item if isinstance(item, str) else _text_field(item, f"{path}[{i}]")
    elif suffix == ".parquet":
        yield from _parquet(path)
    else:
        for line in _text_lines(path):
            if line.strip():
                yield line


def _text_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file, read as they are needed; a binary file (undecodable or with NUL bytes) is refused."""
    fix = "give the corpus as UTF-8 text (.txt one document per line, or .jsonl with a \"text\" field)"
    number = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if "\x00" in line:
                    raise StatsError(f"{path}:{number}: holds NUL bytes; is it a binary file?", fix=fix)
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise StatsError(f"{path}: not UTF-8 text near line {number + 1} ({exc.reason}); is it a binary file?", fix=fix) from None
    except OSError as exc:
        raise StatsError(f"{path}: cannot read the corpus ({exc.strerror or exc})", fix=fix) from None


def _text_field(record, where: str) -> str:
    if not isinstance(record, Mapping) or not isinstance(record.get("text"), str):
        raise StatsError(f"{where}: a corpus record needs a string field \"text\"", fix="write one {\"text\": ...} object per line")
    return record["text"]


def _optional(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise StatsError(f"reading {what} needs the `{module.split('.')[0]}` package, which is not installed",
                         fix=f"pip install {module.split('.')[0]}, or give the corpus as a .txt or .jsonl file") from None


def _parquet(path: Path) -> Iterator[str]:
    parquet = _optional("pyarrow.parquet", f"{path} (parquet)")
    table = parquet.read_table(str(path), columns=["text"])
    for text in table.column("text").to_pylist():
        if text:
            yield text


def _saved_dataset(path: Path) -> Iterator[str]:
    datasets = _optional("datasets", f"{path} (a saved `datasets` dataset)")
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else next(iter(data.values()))
    if "text" not in data.column_names:
        raise StatsError(f"{path}: the dataset has no \"text\" column (columns: {data.column_names})",
                         fix="save a dataset with a \"text\" column")
    for text in data["text"]:
        if text:
            yield text


# --- computing ----------------------------------------------------------------------------------
@torch.no_grad()
def _accumulate(model, tok, modules: Sequence[str], documents: Sequence[str], batch_size: int, dtype: torch.dtype,
                device, progress: bool, max_length: int, ranks: Ranks = ALONE,
                checkpoint: PassCheckpoint | None = None) -> tuple[dict, int]:
    """Sum of k k^T and token count per module, every module read in one forward that stops after the last one.

    Each module's sum stays on the device its keys come from (on a model placed over several devices, that
    module's own), unless ``device`` names one for them all. In a launch of several ranks the leader's bar shows
    its own documents, and tokens per second for all ranks together, estimated as its own rate times the ranks.
    ``checkpoint``: where the pass starts (its last checkpoint, if one of this pass exists) and where it writes one
    every ``checkpoint.every`` documents; resumed, the pass runs the batches it had not run, as they were."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else None
    sums = {m: SecondMomentSum(dtype, fast=speedups.active()) for m in modules}
    count, done = 0, 0
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        for m in modules:
            sums[m].restore(resumed.states[m])
        count, done = resumed.count, resumed.done
    counted_before, started = count, time.perf_counter()
    bar = tqdm(total=len(documents), initial=done, unit="doc",
               desc="second moments" + (f" (rank 0 of {ranks.world})" if ranks.world > 1 else ""),
               disable=not (progress and ranks.leader))
    rate_label = "tokens_per_s" if ranks.world == 1 else f"tokens_per_s_{ranks.world}_ranks"
    with frozen(model), trace(model, inputs=modules, stop=True) as record:
        for lo in range(done, len(documents), batch_size):
            rows = [list(tok(d, truncation=True, max_length=max_length)["input_ids"]) for d in documents[lo: lo + batch_size]]
            rows = [r for r in rows if r]
            if rows:
                count += _add_batch(model, tok, rows, modules, record, sums, device)
            done = min(lo + batch_size, len(documents))
            bar.update(done - lo)
            rate = (count - counted_before) * ranks.world / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix({rate_label: f"{rate:.0f}"}, refresh=False)
            if checkpoint is not None and checkpoint.due(done):
                checkpoint.save(sums, count, done)
    bar.close()
    return {m: s.total() for m, s in sums.items()}, count


def _add_batch(model, tok, rows, modules, record, sums, device) -> int:
    """One batch's keys added to ``sums``; returns its token count."""
    batch = pad_rows(rows, [0] * len(rows), pad_id(tok))
    tokens = batch.attention_mask.flatten().nonzero()[:, 0]  # found on the host: no wait on the device
    run(model, batch.to(model_device(model)))  # from page-locked memory: no wait on queued work
    on_device = {}  # the positions, copied once per device the modules' keys are on
    for m in modules:
        keys = record.inputs[m]
        if keys.device not in on_device:
            on_device[keys.device] = tokens.pin_memory().to(keys.device, non_blocking=True) if keys.is_cuda else tokens
        seen = keys.reshape(-1, keys.shape[-1]).index_select(0, on_device[keys.device])
        sums[m].add(seen.to(device) if device is not None else seen)
    return len(tokens)


def _warn_if_singular(sums: dict, count: int, corpus) -> None:
    widths = {m: s.shape[0] for m, s in sums.items() if s is not None and s.shape[0] > count}
    if widths:
        warnings.warn(f"{corpus} gave {count} tokens, fewer than the key width of {sorted(widths)} "
                      f"({max(widths.values())}): those second moments are singular; use a larger corpus", stacklevel=3)


def _documents(corpus, n_samples: int) -> list[str]:
    documents = []
    for text in read_corpus(corpus):
        documents.append(text)
        if len(documents) >= n_samples:
            break
    if not documents:
        raise StatsError(f"corpus {corpus} holds no text", fix=HOW_TO_SUPPLY)
    return documents


def compute_stats(model, tok, settings: LocateThenEditSettings, spec, corpus, stats_dir=None, *, n_samples: int | None = None,
                  batch_size: int = 8, device=None, progress: bool = True, force: bool = False,
                  layers=None, templates=None, ranks: Ranks = ALONE, checkpoint_every: int | None = None) -> dict[str, Path]:
    """Compute (or find cached) statistics for every rewrite module at every edit layer.

    Returns ``{module name: file}``. One pass over the corpus serves every module still missing. ``ranks``: this
    process's place in a torchrun launch (``ranks.process_group``): each rank sums its share of the documents,
    the sums are added over the ranks, and the leader writes the files while the others wait.

    The pass writes a checkpoint every ``checkpoint_every`` documents of this rank's share (None: a tenth of the
    share, at least ``resume.MIN_INTERVAL``; 0: none) and continues from a checkpoint of the same pass that a killed
    run left (``editing.resume``); the checkpoint is removed once the files are written. ``model`` may hold only
    its first layers (``load_first_layers``): the files then carry the whole model's identity.
    """
    if corpus is None:
        raise StatsError("no corpus given for the second-moment statistics", fix=HOW_TO_SUPPLY)
    if checkpoint_every is not None and checkpoint_every < 0:
        raise StatsError(f"checkpoint_every={checkpoint_every}: a number of documents, 0 for no checkpoints",
                         fix="give a positive number of documents between checkpoints, or 0")
    stats_dir = stats_dir or settings.stats_dir
    wanted = stats_requests(model, spec, settings, stats_dir, layers, templates, n_samples, corpus=corpus)
    corpus_id = corpus_identity(corpus)
    missing = [w for w in wanted if force or not _usable(w, corpus_id)]
    for reused in (w for w in wanted if w not in missing):
        announce(reused.path, reused.module, read_meta(reused.path), "reusing")
        if ranks.leader:
            remove_leftover_checkpoints(reused.path)
    if missing:
        itemsize = DTYPES[missing[0].dtype].itemsize
        check_free_space(stats_dir, sum((_input_width(model, spec, w.module) or 0) ** 2 * itemsize for w in missing),
                         what=f"statistics of {len(missing)} module(s)")
        documents = _documents(corpus, missing[0].n_samples)
        share = ranks.share(documents)
        max_length = spec.max_positions(model.config) or DEFAULT_MAX_LENGTH
        checkpoint = _pass_checkpoint(missing, corpus_id, len(documents), len(share), batch_size, max_length, ranks,
                                      checkpoint_every)
        started = time.perf_counter()
        sums, count = _accumulate(model, tok, [w.module for w in missing], share, batch_size,
                                  DTYPES[missing[0].dtype], device, progress, max_length, ranks, checkpoint)
        sums, count = ranks.summed(sums, count, {w.module: _input_width(model, spec, w.module) for w in missing})
        if ranks.world > 1 and progress and ranks.leader:
            seconds = time.perf_counter() - started
            print(f"second moments: {count} tokens over {ranks.world} ranks in {seconds:.1f} s: "
                  f"{count / max(seconds, 1e-9):.0f} tokens/s together", file=sys.stderr)
        if not ranks.leader:
            ranks.wait_for_all()  # the leader writes the files
            checkpoint.remove()
            return {w.module: w.path for w in wanted}
        _warn_if_singular(sums, count, corpus)
        for w in missing:
            meta = {"format": FORMAT, "module": w.module, "layer": w.layer, **w.identity, "corpus": str(corpus),
                    "corpus_id": corpus_id, "documents": len(documents), "n_samples": w.n_samples, "dtype": w.dtype,
                    "created": _now()}
            write_npz(w.path, sums[w.module], count, meta)
            announce(w.path, w.module, meta, "wrote")
        checkpoint.remove()
        ranks.wait_for_all()
    return {w.module: w.path for w in wanted}


def _pass_checkpoint(missing: Sequence[StatsRequest], corpus_id: str, documents: int, share: int, batch_size: int,
                     max_length: int, ranks: Ranks, every: int | None) -> PassCheckpoint:
    """This rank's checkpoint of the pass, beside the first file it computes, keyed by all its numbers depend on."""
    key = {"modules": [w.module for w in missing], "identities": {w.module: w.identity for w in missing},
           "corpus_id": corpus_id, "documents": documents, "n_samples": missing[0].n_samples,
           "dtype": missing[0].dtype, "batch_size": batch_size, "max_length": max_length,
           "fast": speedups.active(), "rank": ranks.rank, "world": ranks.world}
    return PassCheckpoint(missing[0].path, key, default_interval(share) if every is None else every, share)


def _usable(wanted: StatsRequest, corpus_id: str) -> bool:
    """A cached file for this request: same model (else StatsError) and same corpus (else recompute)."""
    if not wanted.path.exists():
        return False
    stats = read_npz(wanted.path)
    if stats.meta is None:
        return True  # a ROME / EasyEdit file at the expected path: used as it is, announced as unverified
    verify(stats, wanted)
    return stats.meta.get("corpus_id") == corpus_id


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- provenance ---------------------------------------------------------------------------------
def provenance(meta: Mapping | None) -> str:
    """Where a statistics file's numbers came from, in words."""
    if meta is None:
        return ("UNVERIFIED: no adapterkit metadata (a ROME / EasyEdit file?), so its provenance cannot be verified: "
                "the model and corpus it was computed on are unknown")
    if meta.get("imported_from"):
        return (f"imported from {meta['imported_from']} (sha256 {meta.get('sha256')}) on {meta.get('created', 'an unknown date')}; "
                "the corpus it was computed on is unknown")
    documents = f", {meta['documents']} documents" if meta.get("documents") is not None else ""
    return f"computed from corpus {meta.get('corpus')}{documents} on {meta.get('created', 'an unknown date')}"


def announce(path: Path, module: str, meta: Mapping | None, verb: str) -> None:
    """Say which statistics file serves ``module`` and where it came from; an unverified one as a warning."""
    if meta is None:
        warnings.warn(f"{verb} {path} for {module}: {provenance(meta)}; it is used as it is "
                      "(`adapterkit stats import` records where it came from)", stacklevel=3)
    else:
        log.info("%s %s for %s: %s", verb, path, module, provenance(meta))


def locate(wanted: StatsRequest, settings: LocateThenEditSettings) -> StatsRequest | None:
    """The file that serves ``wanted`` when no corpus is given: its own path (``mom2_dataset``'s folder), or, where
    mom2_dataset is the published name, the one file for this model and module in another ``*_stats`` folder."""
    if wanted.path.exists() or settings.mom2_dataset != PUBLISHED_DATASET:
        return wanted if wanted.path.exists() else None
    model_dir = wanted.path.parent.parent
    found, refused = [], []
    for path in sorted(model_dir.glob(f"*_stats/{wanted.path.name}")):
        meta = read_meta(path)
        try:
            if meta is not None:
                check_identity(meta, path, wanted)
            found.append((path, meta))
        except StatsError as exc:
            refused.append(exc)
    if len(found) > 1:
        names = [path.parent.name[: -len("_stats")] for path, _ in found]
        raise StatsError(f"several statistics files could serve {wanted.module}: "
                         + "; ".join(f"{path} ({provenance(meta)})" for path, meta in found),
                         fix=f"set mom2_dataset in the hparams to the corpus whose statistics to use: one of {names}")
    if found:
        return dataclasses.replace(wanted, path=found[0][0])
    if refused:
        raise refused[0]
    return None


# --- files --------------------------------------------------------------------------------------
@dataclass
class Stats:
    mom2: np.ndarray
    count: int
    meta: dict | None
    path: Path

    def moment(self) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.mom2, dtype=np.float64) / max(self.count, 1)).float()


def write_npz(path: Path, mom2_sum: torch.Tensor, count: int, meta: Mapping | None) -> None:
    arrays = {
        "constructor": np.array("util.runningstats.CombinedStat(mom2=util.runningstats.SecondMoment())"),
        "mom2.constructor": np.array("util.runningstats.SecondMoment()"),
        "mom2.count": np.array(count, dtype=np.int64),
        "mom2.mom2": mom2_sum.detach().to("cpu", DTYPES[meta["dtype"]] if meta else torch.float32).numpy(),
        "sample_size": np.array(meta["n_samples"] if meta else count, dtype=np.int64),
    }
    bad = int(arrays["mom2.mom2"].size - np.count_nonzero(np.isfinite(arrays["mom2.mom2"])))
    if bad:
        dtype = meta["dtype"] if meta else "float32"
        raise StatsError(f"{path}: not written: the second moments hold {bad} non-finite value(s) (NaN or inf) in "
                         f"{dtype} (the model's activations are NaN or inf, or the sums overflow {dtype})",
                         fix="compute them with `mom2_dtype: float32` (or float64), or load the model in float32")
    if meta is not None:
        arrays["adapterkit.meta"] = np.array(json.dumps(meta, sort_keys=True))
    check_free_space(path, arrays["mom2.mom2"].nbytes, what="statistics file")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_meta(path) -> dict | None:
    """A statistics file's adapterkit metadata (None for a ROME / EasyEdit file), without reading the matrix."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["adapterkit.meta"])) if "adapterkit.meta" in data else None
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise StatsError(f"{path}: cannot read statistics ({type(exc).__name__}: {exc})",
                         fix="delete the file and compute it again") from None
    if meta is not None and not isinstance(meta, dict):
        raise StatsError(f"{path}: adapterkit.meta is not a JSON object", fix="delete the file and compute it again")
    return meta


def read_npz(path) -> Stats:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mom2.mom2" not in data or "mom2.count" not in data:
                raise StatsError(f"{path}: not a second-moment statistics file (no mom2.mom2 / mom2.count; keys: {sorted(data.keys())})",
                                 fix="point at a file written by `adapterkit stats`, ROME or EasyEdit's layer_stats")
            meta = json.loads(str(data["adapterkit.meta"])) if "adapterkit.meta" in data else None
            stats = Stats(data["mom2.mom2"], int(data["mom2.count"]), meta, path)
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:  # truncated or damaged archives
        raise StatsError(f"{path}: cannot read statistics ({type(exc).__name__}: {exc})",
                         fix="delete the file and compute it again") from None
    mom2 = stats.mom2
    if mom2.ndim != 2 or mom2.shape[0] != mom2.shape[1] or not np.issubdtype(mom2.dtype, np.floating) or stats.count < 0:
        raise StatsError(f"{path}: mom2.mom2 is {mom2.dtype} of shape {list(mom2.shape)} with count {stats.count}; "
                         "statistics are a square float matrix with a non-negative count",
                         fix="delete the file and compute it again")
    if stats.meta is not None and not isinstance(stats.meta, dict):
        raise StatsError(f"{path}: adapterkit.meta is not a JSON object", fix="delete the file and compute it again")
    bad = int(mom2.size - np.count_nonzero(np.isfinite(mom2)))
    if bad:  # a NaN or inf moment makes every update computed from it NaN
        raise StatsError(f"{path}: mom2.mom2 holds {bad} non-finite value(s) (NaN or inf) of {mom2.size}; "
                         "statistics with them would give NaN weights",
                         fix="delete the file and compute it again with `adapterkit stats` (in float32 or float64 "
                             "if it overflowed), or set `mom2_adjustment: false` (ROME)")
    return stats


def verify(stats: Stats, wanted: StatsRequest) -> None:
    """Refuse a file that was computed for another model, module, sample count, dtype or format."""
    check_identity(stats.meta, stats.path, wanted)


def check_identity(meta: Mapping, path: Path, wanted: StatsRequest) -> None:
    if meta.get("format") != FORMAT:
        raise StatsError(f"{path}: statistics format {meta.get('format')!r}, this adapterkit reads {FORMAT!r}",
                         fix=f"delete {path} and compute it again")
    checks = [("config_hash", "a model of another shape (config hash)"), ("weight", "another weight"),
              ("weight_fingerprint", f"a model whose {wanted.identity['weight']} differs (a different checkpoint)"),
              ("module", "another module"), ("n_samples", "another sample count"), ("dtype", "another dtype")]
    expected = {**wanted.identity, "module": wanted.module, "n_samples": wanted.n_samples, "dtype": wanted.dtype}
    for key, what in checks:
        if meta.get(key) != expected[key]:
            raise StatsError(
                f"{path} was computed for {what}: {key} is {meta.get(key)!r} there, {expected[key]!r} for this model",
                fix=f"use another stats_dir or model_name for this model, or delete {path} and compute it again "
                    f"(`adapterkit stats MODEL --hparams FILE --corpus FILE`)")


def import_npz(source, model, spec, settings: LocateThenEditSettings, layer: int, stats_dir=None,
               template: str | None = None, *, force: bool = False) -> Path:
    """Adopt a ROME / EasyEdit statistics file for this model's ``layer``: its shape checked against the rewrite
    module's input width, the module and layer its name (ROME / EasyEdit naming) or metadata give checked against
    ``layer`` (``force``: adopted anyway, the mismatch recorded), written (atomically) where get_mom2 finds it, with
    the model's identity and the provenance: the source's absolute path, its sha256 and the date."""
    source = Path(source)
    stats = read_npz(source)
    depth = spec.num_layers(model.config)
    if not 0 <= layer < depth:
        raise StatsError(f"layer {layer} does not exist: the model has {depth} layers (0 to {depth - 1})",
                         fix="give --layer one of the edit layers of the hparams")
    template = template or settings.rewrite_templates[0]
    wanted = stats_requests(model, spec, settings, stats_dir or settings.stats_dir, [layer], [template])[0]
    _check_width(stats, model, spec, wanted.module)
    mismatch = _named_for_another_module(source, stats.meta, template, layer)
    if mismatch and not force:
        raise StatsError(f"{source}: {mismatch}, not for {wanted.module} (layer {layer})",
                         fix=f"import the file written for {wanted.module}, give the --layer the file was written for, "
                             "or pass --force if the file was misnamed and does belong to this layer")
    if mismatch:
        warnings.warn(f"importing {source} for {wanted.module} (layer {layer}) with --force: {mismatch}", stacklevel=2)
    warnings.warn(f"importing {source}: its provenance (model, corpus) cannot be verified; it is used as given", stacklevel=2)
    meta = {"format": FORMAT, "module": wanted.module, "layer": layer, **wanted.identity, "corpus": None,
            "corpus_id": None, "documents": None, "n_samples": wanted.n_samples, "dtype": wanted.dtype,
            "imported_from": str(source.resolve()), "sha256": _sha256(source), "created": _now(),
            **({"forced_over": mismatch} if mismatch else {})}
    write_npz(wanted.path, torch.from_numpy(np.asarray(stats.mom2)), stats.count, meta)
    announce(wanted.path, wanted.module, meta, "wrote")
    return wanted.path


STATS_FILE_NAME = re.compile(r"(?P<module>.+)_(?:float16|bfloat16|float32|float64)_mom2_\d+\.npz")


def _named_for_another_module(source: Path, meta: Mapping | None, template: str, layer: int) -> str | None:
    """What the file says it was written for, where that is another layer or module than ``template`` at ``layer``:
    its adapterkit metadata, else its ROME / EasyEdit file name (``{module}_{dtype}_mom2_{n}.npz``)."""
    module = template.format(layer)
    if meta is not None and (meta.get("module"), meta.get("layer")) != (module, layer):
        return f"its metadata says it was written for {meta.get('module')} (layer {meta.get('layer')})"
    named = STATS_FILE_NAME.fullmatch(source.name)
    if meta is not None or named is None or named["module"] == module:
        return None
    at_layer = re.fullmatch(re.escape(template).replace(re.escape("{}"), r"(\d+)"), named["module"])
    if at_layer:
        return f"its name says it was written for layer {at_layer[1]} ({named['module']})"
    return f"its name says it was written for the module {named['module']}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _input_width(model, spec, module_name: str) -> int | None:
    weight = getattr(model.get_submodule(module_name), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    return int(spec.out_in_shape(tuple(weight.shape))[1])


def _check_width(stats: Stats, model, spec, module: str) -> None:
    width = _input_width(model, spec, module)
    if width is not None and tuple(stats.mom2.shape) != (width, width):
        raise StatsError(f"{stats.path}: statistics of shape {list(stats.mom2.shape)}, but {module} takes {width} inputs",
                         fix="these statistics belong to another model or module")


# --- used by the methods ------------------------------------------------------------------------
def get_mom2(model, spec, settings: LocateThenEditSettings, layer: int, stats_dir=None, corpus=None, *, tok=None,
             template: str | None = None) -> torch.Tensor:
    """E[k k^T] ([d_in, d_in], float32, CPU) of ``template`` (default: the rewrite module) at ``layer``.

    Found in the stats dir, or computed for every edit layer at once from ``corpus`` / ``mom2_corpus``.
    """
    stats_dir = stats_dir or settings.stats_dir
    template = template or settings.rewrite_templates[0]
    corpus = corpus or settings.mom2_corpus
    wanted = stats_requests(model, spec, settings, stats_dir, [layer], [template], corpus=corpus)[0]
    if corpus is None:
        found = locate(wanted, settings)
        if found is None:
            raise StatsError(f"no second-moment statistics for {wanted.module} (looked for {wanted.path})" + _nearby(wanted),
                             fix=HOW_TO_SUPPLY)
        wanted = found
    elif not _usable(wanted, corpus_identity(corpus)):
        if tok is None:
            raise StatsError(f"statistics for {wanted.module} must be computed, and no tokenizer was given")
        layers = sorted(set(settings.layers) | {layer})
        compute_stats(model, tok, settings, spec, corpus, stats_dir, layers=layers, templates=[template])
    key = (str(wanted.path), wanted.path.stat().st_mtime_ns, json.dumps(wanted.identity, sort_keys=True))
    if key not in _moment_cache:
        stats = read_npz(wanted.path)
        if stats.meta is None:
            _check_width(stats, model, spec, wanted.module)
        else:
            verify(stats, wanted)
        announce(wanted.path, wanted.module, stats.meta, "using")
        _moment_cache[key] = stats.moment()
    return _moment_cache[key]


def _nearby(wanted: StatsRequest) -> str:
    """Files of the same module for other sample counts, dtypes or corpora: what to set to use them."""
    model_dir = wanted.path.parent.parent
    others = sorted(model_dir.glob(f"*_stats/{wanted.module}_*_mom2_*.npz")) if model_dir.exists() else []
    if not others:
        return ""
    return ("; found " + ", ".join(str(o) for o in others)
            + " (set mom2_n_samples / mom2_dtype, and mom2_dataset to the folder's name before _stats, to match)")


def check_stats_inputs(model, spec, settings) -> None:
    """Statistics files the settings point at, and the corpus they name, are readable (cheaply: a zip's
    directory and a corpus's first document), so a damaged one stops the edit before it starts."""
    if not isinstance(settings, LocateThenEditSettings):
        return
    for wanted in stats_requests(model, spec, settings, settings.stats_dir, corpus=settings.mom2_corpus):
        if settings.mom2_corpus is None:
            wanted = locate(wanted, settings) or wanted
        if not wanted.path.exists():
            continue
        try:
            with zipfile.ZipFile(wanted.path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise StatsError(f"{wanted.path}: cannot read statistics ({type(exc).__name__}: {exc})",
                             fix="delete the file and compute it again") from None
        if not {"mom2.mom2.npy", "mom2.count.npy"} <= names:
            raise StatsError(f"{wanted.path}: not a second-moment statistics file (no mom2.mom2 / mom2.count)",
                             fix="point at a file written by `adapterkit stats`, ROME or EasyEdit's layer_stats")
    if settings.mom2_corpus is not None:
        next(iter(read_corpus(settings.mom2_corpus)), None)
