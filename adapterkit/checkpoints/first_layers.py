"""A model built with only its first layers, for work that never runs the layers above them: the statistics pass
stops after the deepest edit layer, so the layers over it cost memory and nothing else.

The config's layer count (the key the architecture declaration names in ``config.num_layers``) is lowered, so
the model class builds fewer layers and the weights of the others are not loaded. The model remembers the depth
of the checkpoint (``FULL_DEPTH``), so that what it computes carries the identity of the whole model
(``editing.stats.config_hash``) and an edit of the whole model accepts it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..arch.spec import _config_rule

FULL_DEPTH = "adapterkit_full_num_layers"


@dataclass(frozen=True)
class FirstLayers:
    """What a load with ``first_layers`` built: ``kept`` of ``total`` layers and the parameters that came with them.
    ``note`` says why the whole model was loaded instead (``kept == total``), where it was."""
    kept: int
    total: int
    loaded_parameters: int
    total_parameters: int
    note: str | None = None

    @property
    def share(self) -> float:
        return self.loaded_parameters / max(self.total_parameters, 1)

    def describe(self) -> str:
        amounts = (f"{_count(self.loaded_parameters)} of {_count(self.total_parameters)} parameters "
                   f"({100 * self.share:.1f} %)")
        if self.note is not None:
            return f"loaded the whole model, {amounts}: {self.note}"
        return (f"loaded layers 0-{self.kept - 1} of {self.total}, {amounts}: the layers above the deepest edit "
                f"layer are not needed for the statistics ({_count(self.total_parameters - self.loaded_parameters)} "
                "parameters not loaded)")


def _count(n: int) -> str:
    for size, unit in ((10 ** 9, "B"), (10 ** 6, "M"), (10 ** 3, "k")):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def shallow_config(config: Mapping[str, Any], spec, keep: int) -> tuple[dict | None, str | None]:
    """``config`` with ``keep`` layers, or (None, why not) where the declaration cannot tell the layer count's key
    or nothing would be dropped. Every key of the declaration's rule that the config holds is lowered (aliases), and
    per-layer lists (a top-level list as long as the model is deep, such as attention layer types) are cut."""
    rule = spec.declaration.get("config", {}).get("num_layers")
    if rule is None:
        return None, f"the {spec.name} declaration names no config key for the layer count (config.num_layers)"
    keys = [key for key in _config_rule(rule)[0] if isinstance(config.get(key), int)]
    if not keys:
        return None, (f"the config holds none of {list(_config_rule(rule)[0])}, the layer-count keys the "
                      f"{spec.name} declaration names")
    total = int(config[keys[0]])
    if keep >= total:
        return None, f"the deepest edit layer ({keep - 1}) is the top layer of {total}"
    shallow = dict(config)
    for key, value in config.items():
        if isinstance(value, list) and len(value) == total:
            shallow[key] = value[:keep]
    shallow.update({key: keep for key in keys})
    return shallow, None


def dropped_layer_pattern(spec, keep: int) -> re.Pattern:
    """Tensor names of the layers at ``keep`` and above, under the declared layers path (with or without the base
    model's prefix, as checkpoints store them)."""
    path = spec.layers_path
    tails = {path, path.split(".", 1)[-1]}
    alternatives = "|".join(re.escape(tail) for tail in sorted(tails, key=len, reverse=True))
    return re.compile(rf"(?:^|\.)(?:{alternatives})\.(\d+)\.")


def is_dropped(name: str, pattern: re.Pattern, keep: int) -> bool:
    found = pattern.search(name)
    return found is not None and int(found.group(1)) >= keep


def parameter_count(model) -> int:
    """Parameters of ``model``, tied ones once (a model on the meta device counts too)."""
    return sum(p.numel() for p in model.parameters())


def full_num_layers(model, spec) -> int:
    """The depth of the checkpoint ``model`` was loaded from, also where it holds only its first layers."""
    return getattr(model, FULL_DEPTH, None) or spec.num_layers(model.config)
