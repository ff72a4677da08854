"""Editing methods: one module per method, beside its paper; the contract they share is in ``base.py``,
their typed settings in ``settings.py``, the built-in ones' class attributes in ``described.py``.

A method plugin registers ``EditMethod`` objects through the ``register_methods`` hook.
"""
from __future__ import annotations

from .base import EditMethod, LocateThenEditMethod, TrainedEditMethod  # noqa: F401  (the contract)
from ..settings.methods import LocateThenEditSettings, MethodSettings, TrainedEditorSettings, published


def builtin_methods() -> list[EditMethod]:
    """The methods that ship with adapterkit (imported here so `import adapterkit` stays light)."""
    import importlib

    return [getattr(importlib.import_module(f"adapterkit.methods.{module}"), cls)() for module, cls in BUILTIN]


# each built-in method's module and class; the class subclasses the one of the same name in described.py
BUILTIN = [("rome", "ROME"), ("memit", "MEMIT"), ("alphaedit", "AlphaEdit"), ("pmet", "PMET"), ("mend", "MEND"), ("serac", "SERAC")]
