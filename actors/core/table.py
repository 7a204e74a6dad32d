"""The agent table: agent id <-> row, and the registry of every per-row array.

Each part of the core (live signals, history, in-flight records...) registers its per-row
arrays here instead of owning them, so growing the table and the swap-remove that keeps
rows dense move every array at once: no part can forget one. Rows sit on the last axis,
so a part's ``(D, rows)`` array is scored with whole-array passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

# Called after a swap-remove with (removed ids, {old row: new row} for the rows that moved).
RemoveListener = Callable[[list[str], dict[int, int]], None]


@dataclass(frozen=True)
class ArraySpec:
    lead: tuple[int, ...]  # leading shape, e.g. (6,) for one value per dimension
    dtype: Any
    fill: float  # value of a fresh row


def columns(arr: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """``arr[..., rows]`` of a ``(D, capacity)`` array, to read from. Rows from ``span``:
    a slice stays a view; an index array is a ``take`` along the row axis, a third of the
    time of fancy indexing on the last axis (numpy's general path, per element), which a
    selection pays for every dimension array it reads."""
    if isinstance(rows, slice) or rows.dtype == np.bool_:  # a mask is not an index to take
        return arr[..., rows]
    out: np.ndarray = arr.take(rows, axis=-1)
    return out


class AgentTable:
    def __init__(self, initial_capacity: int = 1024) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.n = 0
        self.capacity = max(int(initial_capacity), 1)
        self.specs: dict[str, ArraySpec] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._on_remove: list[RemoveListener] = []
        # The last ``span`` asked and its answer (arrays are not hashable: by identity;
        # a new array is a new question, and rows are never written in place).
        self._span: tuple[np.ndarray | None, np.ndarray | slice] = (None, slice(0, 0))

    # ------------------------------------------------------------------ registry
    def register(self, name: str, lead: tuple[int, ...], dtype: Any, fill: float) -> None:
        if name in self.specs:
            raise ValueError(f"per-row array {name!r} is registered twice")
        spec = ArraySpec(lead, np.dtype(dtype), fill)
        self.specs[name] = spec
        arr = np.empty((*lead, self.capacity), dtype=spec.dtype)
        arr[..., : self.n] = fill
        self.arrays[name] = arr

    def on_remove(self, listener: RemoveListener) -> None:
        """For parts that keep per-agent state outside the arrays (keyed by id or row)."""
        self._on_remove.append(listener)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    # ------------------------------------------------------------------ rows
    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = max(need, int(self.capacity * 1.5) + 1)
        for name, spec in self.specs.items():
            new = np.empty((*spec.lead, cap), dtype=spec.dtype)
            new[..., : self.n] = self.arrays[name][..., : self.n]
            self.arrays[name] = new
        self.capacity = cap

    def add(self, ids: Sequence[str]) -> None:
        """Append fresh rows (every array at its fill value) for ids not yet known."""
        start = self.n
        self._grow(start + len(ids))
        for name, spec in self.specs.items():
            self.arrays[name][..., start : start + len(ids)] = spec.fill
        for j, a in enumerate(ids):
            self.index[a] = start + j
        self.ids.extend(ids)
        self.n += len(ids)

    def lookup(self, ids: Sequence[Any]) -> np.ndarray:
        """Row of each id; -1 where unknown (no state is created) or not even hashable
        (rejected later by validation)."""
        get = self.index.get
        try:
            return np.fromiter(map(get, ids, repeat(-1)), np.int64, len(ids))
        except TypeError:
            return np.array([get(a, -1) if isinstance(a, str) else -1 for a in ids], np.int64)

    def rows_creating(self, ids: Sequence[Any], idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Rows of the (valid) items ``ids[idx]``, whose ``lookup`` gave ``rows``, with the
        ones unknown so far created."""
        new = np.flatnonzero(rows < 0)
        if not len(new):
            return rows
        at = idx[new].tolist()
        self.add(list(dict.fromkeys(ids[i] for i in at)))
        out = rows.copy()
        get = self.index.__getitem__
        out[new] = [get(ids[i]) for i in at]
        return out

    def remove(self, rows: Iterable[int]) -> None:
        """Swap-remove: the last rows move into the holes so arrays stay dense. Linear in
        the rows removed plus the rows moved, whatever else the parts hold."""
        drop = np.unique(np.fromiter(rows, np.int64))
        if not len(drop):
            return
        n_after = self.n - len(drop)
        holes = drop[drop < n_after]
        tail = np.setdiff1d(np.arange(n_after, self.n), drop, assume_unique=True)
        removed = [self.ids[r] for r in drop.tolist()]
        for a in removed:
            del self.index[a]
        for arr in self.arrays.values():
            arr[..., holes] = arr[..., tail]
        for h, t in zip(holes.tolist(), tail.tolist(), strict=True):
            self.ids[h] = self.ids[t]
            self.index[self.ids[h]] = h
        del self.ids[n_after:]
        self.n = n_after
        moved = dict(zip(tail.tolist(), holes.tolist(), strict=True))
        for listener in self._on_remove:
            listener(removed, moved)

    def span(self, rows: np.ndarray) -> np.ndarray | slice:
        """``rows`` as an index for reads: when they are every row in order, a slice (a
        view, where a fancy index would copy each array read), else the rows themselves.
        Only to read from (a view writes through)."""
        if rows is self._span[0]:  # asked again for the same array (one selection)
            return self._span[1]
        n = len(rows)
        full = n > 64 and n == self.n and rows[0] == 0 and rows[-1] == n - 1
        # Increasing, n of them, from 0 to n - 1: every row in order.
        out: np.ndarray | slice = rows
        if full and bool((rows[1:] > rows[:-1]).all()):
            out = slice(0, n)
        self._span = (rows, out)
        return out

    def row(self, agent_id: str) -> int | None:
        return self.index.get(agent_id)
