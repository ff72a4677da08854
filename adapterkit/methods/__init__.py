"""Editing methods. Each method is one module beside its paper; this file holds the contract they share.

A method plugin registers objects following ``EditMethod`` through the ``register_methods`` hook.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping


class EditMethod:
    """What the core needs from an editing method.

    name:          the ``alg_name`` used in hparams files (ROME, MEMIT, ...).
    schema:        name of the hparams schema in schemas/ (``<schema>.schema.json``).
    defaults:      architecture-independent default hyperparameters.
    template_keys: hparams key -> module role (or list of roles); detect fills in the architecture's templates.
    arch_keys:     hparams keys whose value the architecture derives (``v_loss_layer``).
    trainable:     True for methods that need a trained editor archive (MEND, SERAC).
    """

    name: ClassVar[str]
    schema: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}
    template_keys: ClassVar[Mapping[str, str | list[str]]] = {}
    arch_keys: ClassVar[tuple[str, ...]] = ()
    trainable: ClassVar[bool] = False
    distribution: str = "?"

    def apply(self, model, tok, requests, hparams: Mapping[str, Any], *, spec, weights) -> Any:
        """Edit ``model`` for ``requests``; change weights only through ``weights.add(name, delta)``.

        May return an object that answers queries instead of ``model`` (SERAC does); None otherwise.
        """
        raise NotImplementedError


# ROME-family methods read the same module templates.
LOCATE_THEN_EDIT_TEMPLATES = {
    "rewrite_module_tmp": "mlp_out",
    "layer_module_tmp": "layer",
    "mlp_module_tmp": "mlp",
    "attn_module_tmp": "attn",
    "ln_f_module": "ln_f",
    "lm_head_module": "lm_head",
}


def builtin_methods() -> list[EditMethod]:
    """The methods that ship with adapterkit (imported here so `import adapterkit` stays light)."""
    import importlib

    return [getattr(importlib.import_module(f"adapterkit.methods.{module}"), cls)() for module, cls in BUILTIN]


BUILTIN = [("rome", "ROME"), ("memit", "MEMIT"), ("pmet", "PMET"), ("mend", "MEND"), ("serac", "SERAC")]
