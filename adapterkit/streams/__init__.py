"""Lifelong editing: a stream of batches of edits, applied one on top of the last (docs/streams.md).

- ``stream.py``:  ``EditStream``, what users hold: apply, restore, save, load;
- ``carried.py``: what a method keeps across batches (AlphaEdit's earlier edits' keys);
- ``ledger.py``:  every batch's deltas and the touched weights' originals, for bit-exact restore;
- ``folder.py``:  the saved folder: manifest, batch files, kill-safe saving, the checks on load.
"""
from .stream import EditStream  # noqa: F401
