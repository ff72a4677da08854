"""Progress bars on long work: shown on a terminal, silent in logs and tests (tqdm's own rule)."""
from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, unit: str, disable_below: int = 2) -> Iterable[T]:
    """``items`` with a bar when there are at least ``disable_below`` of them and stderr is a terminal."""
    from tqdm.auto import tqdm

    items = list(items)
    return tqdm(items, desc=desc, unit=unit, disable=True if len(items) < disable_below else None, leave=False)


def counter(total: int, *, desc: str, unit: str, disable_below: int = 2):
    """A bar counting ``total`` units advanced by ``update(n)``: work done in chunks shows its rate per unit
    (requests/s, tokens/s); tqdm throttles its redraws, so the loop does not wait on it."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=True if total < disable_below else None, leave=False)
