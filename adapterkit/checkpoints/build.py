"""A model built from its config and declaration, without reading weights: the class, a build (on the meta device
for names and shapes only), and the tensor index such a build gives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..arch.registry import get_registry
from ..arch.spec import ArchSpec
from ..errors import CheckpointError


@dataclass
class TensorIndex:
    """Tensor names -> shapes (None where only the name is known, as in a .bin index)."""
    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    source: str = ""

    @property
    def names(self):
        return self.shapes.keys()


def config_object(config: Mapping[str, Any], spec: ArchSpec):
    """A transformers config object for ``config`` (the plugin's native config class where it has one)."""
    native = spec.config_class()
    config = {k: v for k, v in config.items() if k not in ("auto_map", "_name_or_path", "transformers_version")}
    if native is not None:
        return native(**config)
    from transformers import AutoConfig

    model_type = config.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **config)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"transformers does not know model_type {model_type!r} ({exc})",
                              fix=f"upgrade transformers, or give the {spec.name} plugin a native config_class/model_class") from None


def model_class(spec: ArchSpec):
    native = spec.model_class()
    if native is not None:
        return native
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def build_model(config: Mapping[str, Any], spec: ArchSpec | None = None, *, dtype=None):
    """A randomly initialised model from a config dict (used for tiny test models and for meta-device shapes)."""
    spec = spec or get_registry().for_config(config)
    config_obj = config_object(config, spec)
    cls = model_class(spec)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return cls.from_config(config_obj, **kwargs) if hasattr(cls, "from_config") else cls._from_config(config_obj, **kwargs)


def meta_model(config: Mapping[str, Any], spec: ArchSpec, source: str = "config.json"):
    """The model ``config`` builds, on the meta device (no memory, no weights read)."""
    import torch

    try:
        with torch.device("meta"):
            return build_model(config, spec)
    except CheckpointError:
        raise
    except Exception as exc:  # transformers rejects a malformed config in many ways
        raise CheckpointError(f"{source}: transformers cannot build a {spec.name} model from it "
                              f"({type(exc).__name__}: {exc})",
                              fix="repair config.json (write it again with config.save_pretrained)") from None


def meta_tensor_index(config: Mapping[str, Any], spec: ArchSpec) -> TensorIndex:
    """Names and shapes from a model built on the meta device (no memory, no weights read)."""
    model = meta_model(config, spec)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return TensorIndex(shapes, source="meta-device build from config.json")
