"""Models placed over several devices by accelerate: the requests (``device_map``, ``max_memory``,
``offload_folder``) checked before loading, and what the editing core asks of a placed model (where its inputs
go, where each module runs, which weights are not in memory).

accelerate's hooks (``AlignDevicesHook``) move activations between devices as a forward crosses them, so the
core only has to put inputs on the embedding's device and keep each tensor it makes beside the module it came
from. A weight offloaded by accelerate (to the disk, or to the CPU behind a GPU) sits on the meta device and is
loaded at each forward: it can be read, never written in place, so an edit that would write one is refused.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from ..errors import AdapterkitError, listed

ACCELERATE_INSTALL = "pip install accelerate"
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?$", re.IGNORECASE)
DEVICE_MAP_HELP = ("auto, balanced, balanced_low_0 or sequential (accelerate plans the placement), a device (cpu, "
                   "cuda:1), or a JSON file of module name -> device (an int GPU index, \"cpu\" or \"disk\")")
MAX_MEMORY_HELP = "memory per device for --device-map's plan, e.g. 0=70GiB,1=70GiB,cpu=200GiB"


# --- the requests ---------------------------------------------------------------------------------
def parse_max_memory(text: str, origin: str = "--max-memory") -> dict:
    """``0=70GiB,cpu=200GiB`` as accelerate's ``max_memory`` dict ({0: "70GiB", "cpu": "200GiB"})."""
    fix = f"write {origin} as DEVICE=SIZE pairs separated by commas, e.g. 0=70GiB,1=70GiB,cpu=200GiB"
    parsed: dict = {}
    for part in (p.strip() for p in str(text).split(",")):
        device, equals, size = (s.strip() for s in part.partition("="))
        if not part or not equals or not device or not size:
            raise AdapterkitError(f"{origin} {text!r}: {part!r} is not DEVICE=SIZE", fix=fix)
        key = _memory_key(device, origin, text)
        if key in parsed:
            raise AdapterkitError(f"{origin} {text!r}: {device!r} is given twice", fix="give each device once")
        parsed[key] = _memory_size(size, origin, text)
    return parsed


def _memory_key(device: str, origin: str, text: str):
    if device.isdigit():
        return int(device)
    if device.lower().startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if device.lower() in ("cpu", "mps"):
        return device.lower()
    raise AdapterkitError(f"{origin} {text!r}: {device!r} is not a device accelerate plans for",
                          fix="name GPUs by index (0, 1, ... or cuda:N), and the host as cpu (mps on a Mac)")


def _memory_size(size, origin: str, text):
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    if isinstance(size, str) and size.strip().isdigit():
        return int(size.strip())
    if isinstance(size, str) and _SIZE.match(size.strip()):
        return size.strip()
    raise AdapterkitError(f"{origin} {text!r}: {size!r} is not a size",
                          fix="give sizes as bytes or with a unit: 500MB, 70GiB, 1.5TB")


def check_max_memory(max_memory, origin: str = "max_memory") -> dict:
    """``max_memory`` (a dict, or the command line's text form) checked, as accelerate's dict."""
    if isinstance(max_memory, str):
        return parse_max_memory(max_memory, origin)
    if not isinstance(max_memory, dict) or not max_memory:
        raise AdapterkitError(f"{origin} {max_memory!r} is not a mapping of device to size",
                              fix='pass e.g. {0: "70GiB", "cpu": "200GiB"}')
    return {_memory_key(str(k), origin, max_memory) if not isinstance(k, int) else k: _memory_size(v, origin, max_memory)
            for k, v in max_memory.items()}


def read_device_map(value, origin: str = "--device-map"):
    """``value`` as transformers' ``device_map``: a strategy name, a device, or a dict (a JSON file's on the CLI)."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if text in STRATEGIES:
        return text
    if text.lower().endswith(".json"):
        from ..files.safe_load import load_json

        path = Path(text)
        if not path.is_file():
            raise AdapterkitError(f"{origin} {text}: no such file", fix=f"give {DEVICE_MAP_HELP}")
        loaded = load_json(path, error=AdapterkitError, what="device map")
        if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
            raise AdapterkitError(f"{path}: a device map is a JSON object of module name -> device",
                                  fix='write e.g. {"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": "cpu"}')
        return loaded
    from .devices import check_device

    check_device(text, origin=origin, on_cpu=f"{origin} cpu")
    return text


def placement_options(*, device=None, device_map=None, max_memory=None, offload_folder=None, where: str = "load_model") -> dict:
    """The keywords ``from_pretrained`` takes for a placement (empty without one), checked before any loading:
    accelerate installed, no ``device`` beside a ``device_map``, ``max_memory`` and ``offload_folder`` only with one,
    a folder for weights the map sends to the disk."""
    if device_map is None:
        stray = [name for name, given in (("max_memory", max_memory), ("offload_folder", offload_folder)) if given is not None]
        if stray:
            raise AdapterkitError(f"{where}: {' and '.join(stray)} place(s) a model only with a device_map",
                                  fix="add device_map=\"auto\" (--device-map auto) for accelerate to plan the placement")
        return {}
    if device is not None:
        raise AdapterkitError(f"{where}: device={str(device)!r} and device_map={device_map!r} both place the model",
                              fix="give one: --device puts the whole model on one device, --device-map spreads it")
    if importlib.util.find_spec("accelerate") is None:
        raise AdapterkitError(f"{where}: a device_map needs the accelerate package, which is not installed",
                              fix=ACCELERATE_INSTALL)
    device_map = read_device_map(device_map)
    options = {"device_map": device_map}
    if max_memory is not None:
        options["max_memory"] = check_max_memory(max_memory)
    if offload_folder is not None:
        options["offload_folder"] = str(offload_folder)
    elif isinstance(device_map, dict) and "disk" in device_map.values():
        raise AdapterkitError(f"{where}: the device map sends {listed(k for k, v in device_map.items() if v == 'disk')} "
                              "to the disk, and no offload folder is given", fix="pass --offload-folder DIR (offload_folder=)")
    return options


def dispatch_built(model, options: dict):
    """A model already in memory (a dequantised GGUF file) placed as ``options`` (``placement_options``) say."""
    if not options:
        return model
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = options["device_map"]
    if isinstance(device_map, str) and device_map in STRATEGIES:
        device_map = infer_auto_device_map(model, max_memory=options.get("max_memory"),
                                           no_split_module_classes=getattr(model, "_no_split_modules", None) or [])
    elif not isinstance(device_map, dict):
        device_map = {"": device_map}
    if "disk" in device_map.values() and "offload_folder" not in options:
        raise AdapterkitError(f"the planned placement sends {listed(k for k, v in device_map.items() if v == 'disk')} "
                              "to the disk, and no offload folder is given",
                              fix="pass --offload-folder DIR (offload_folder=), or give more memory in --max-memory")
    model = dispatch_model(model, device_map=device_map, offload_dir=options.get("offload_folder"))
    model.hf_device_map = device_map
    return model


# --- a placed model -------------------------------------------------------------------------------
def _hooks(module):
    hook = getattr(module, "_hf_hook", None)
    return [] if hook is None else list(getattr(hook, "hooks", None) or [hook])


def module_device(module):
    """Where ``module`` runs: its accelerate hook's execution device, else its first weight's (None: it has none)."""
    import torch

    for hook in _hooks(module):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return None


def input_device(model):
    """Where a forward's inputs go: the embedding's device (the first parameter's where the model has no
    embedding accessor)."""
    import torch

    embed = None
    try:
        embed = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        pass
    device = module_device(embed) if embed is not None else None
    if device is not None:
        return device
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def is_placed(model) -> bool:
    """Whether accelerate spread ``model`` (several devices, or weights offloaded): its forwards cross devices or
    load weights, which the value optimisation's fast path cannot capture or replay."""
    placement = getattr(model, "hf_device_map", None)
    if isinstance(placement, dict) and (len(set(map(str, placement.values()))) > 1 or "disk" in placement.values()):
        return True
    devices = {p.device for p in model.parameters()}
    return len(devices) > 1 or any(d.type == "meta" for d in devices)


def offloaded_value(model, name: str):
    """The values of tensor ``name`` (a weight or buffer) from where accelerate keeps it offloaded; None where it is
    not offloaded."""
    owner, _, short = name.rpartition(".")
    for hook in _hooks(model.get_submodule(owner)):
        weights = getattr(hook, "weights_map", None)
        if weights is not None and short in weights:
            return weights[short]
    return None


def readable(model, name: str, tensor=None):
    """Tensor ``name``'s values (``tensor``: it, as the model holds it), read from where accelerate keeps them if it
    was offloaded to the meta device."""
    tensor = model.get_parameter(name) if tensor is None else tensor
    if tensor.device.type != "meta":
        return tensor
    found = offloaded_value(model, name)
    if found is None:
        raise AdapterkitError(f"{name} is on the meta device and accelerate holds no copy of it",
                              fix="load the model with load_model (device_map=...), which keeps every weight somewhere")
    return found


def placement_of(model, name: str) -> str:
    """Where the device map put the module holding ``name``, in words (for messages)."""
    placement = getattr(model, "hf_device_map", None) or {}
    module = name.rpartition(".")[0]
    best = max((k for k in placement if k == "" or module == k or module.startswith(k + ".")), key=len, default=None)
    return f"device map entry {best or '(whole model)'!r} -> {placement[best]!r}" if best is not None else "the meta device"


def check_weights_in_memory(model, names, what: str = "the edit") -> None:
    """Refuse, before any work, to write weights that accelerate offloaded (on the meta device)."""
    absent = []
    for name in names:
        try:
            if model.get_parameter(name).device.type == "meta":
                absent.append(name)
        except AttributeError:
            continue  # a name the model lacks is the hparams check's to report
    if absent:
        where = "; ".join(f"{n} ({placement_of(model, n)})" for n in absent[:3])
        raise AdapterkitError(
            f"{what} would write {listed(absent)}, which accelerate offloaded ({where}): an offloaded weight is loaded "
            "at each forward and cannot be changed in place",
            fix="give those layers GPU or CPU memory: raise --max-memory (max_memory=) for a device, or put their "
                "modules on a GPU or \"cpu\" in the --device-map file; the layers the edit only reads may stay offloaded")


def describe_placement(model) -> str:
    """The devices a model runs on, for reports: ``cpu`` or ``cuda:0`` alone, or the device map's devices and counts."""
    placement = getattr(model, "hf_device_map", None)
    if isinstance(placement, dict) and is_placed(model):
        counts: dict = {}
        for device in placement.values():
            counts[str(device)] = counts.get(str(device), 0) + 1
        return "device map: " + json.dumps(counts)
    return str(input_device(model))
