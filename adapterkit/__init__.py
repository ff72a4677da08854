"""adapterkit: knowledge editing on any transformer architecture, through declarative plugins."""
from .arch.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "load_model", "detect", "edit", "edited", "train", "apply_deltas", "EditResult", "EditStream",
           "causal_trace", "__version__"]


def __getattr__(name):
    # The API pulls in torch; keep `import adapterkit` (and plugin imports of hookimpl) light.
    if name in ("edit", "edited", "train", "apply_deltas", "EditResult"):
        from . import api
        return getattr(api, name)
    if name == "EditStream":
        from .streams import EditStream
        return EditStream
    if name == "load_model":
        from .checkpoints.loading import load_model
        return load_model
    if name == "detect":
        from .arch.detect import detect
        return detect
    if name == "causal_trace":
        from .tracing.trace import causal_trace
        return causal_trace
    raise AttributeError(f"module 'adapterkit' has no attribute {name!r}")
