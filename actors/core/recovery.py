"""Bringing a shard's state back, and snapshotting it without stopping its host.

``replay`` applies WAL records (``actors.core.wal``) to a ``ShardState``, each at the time
it was made; ``snapshot_layout`` and ``snapshot_parts`` split a snapshot so a host can copy
the large arrays in pieces (``actors.cluster.durability`` does). The one-shot
``ShardState.snapshot`` / ``ShardState.restore`` stay on the state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from actors.core import persistence, wal
from actors.core.state import ShardState


class _Stopped:
    """A clock stopped at the time a WAL record was made."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def replay(state: ShardState, records: list[wal.Record]) -> Iterator[int]:
    """Apply WAL records in order, each at its own time; yields after each so a host can
    report progress. The journal is off meanwhile (nothing is logged twice)."""
    journal, clock = state.journal, state._clock
    state.journal = None
    try:
        for i, rec in enumerate(records):
            state._clock = _Stopped(rec.t)
            args = rec.args
            if rec.op == "ingest":
                state.ingest(wal.ingest_columns(rec))
            elif rec.op == "assign":
                state.assign_with_ids([(a, aid) for a, aid in args["pairs"]])
            elif rec.op == "complete":
                state.complete(args["agent"], args["id"], args["ok"], args["duration_s"])
            elif rec.op == "describe":
                state.describe(args["agent"], args["max_concurrency"], args["labels"])
            elif rec.op == "delete":
                state.delete(args["agent"])
            elif rec.op == "sweep":
                state.sweep()
            else:
                raise ValueError(f"unknown WAL op {rec.op!r}")
            yield i
    finally:
        state.journal, state._clock = journal, clock


def snapshot_layout(
    state: ShardState, copy_below_bytes: int = 1 << 20
) -> dict[str, tuple[Any, Any]]:
    """Shape and dtype of each array ``snapshot_parts`` leaves to the host to copy, so it
    can allocate (and fault in) the copies beforehand, off its event loop."""
    n = state.table.n
    return {
        k: (a[..., :n].shape, a.dtype)
        for k, a in state.table.arrays.items()
        if a[..., :n].nbytes >= copy_below_bytes
    }


def snapshot_parts(
    state: ShardState, copy_below_bytes: int = 1 << 20
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """A snapshot in two steps, for a host that must not stop for the whole copy: the
    header and every array under ``copy_below_bytes`` copied now, the larger ones as views,
    named in the list, for the host to copy in pieces. Those large arrays (the signals and
    the history) change only by ingest, describe, delete and sweep: the host holds those
    back until its copy is done, and the snapshot is the state as of this call.
    Assignments and completions change only the small arrays and the in-flight records,
    copied here, so selections go on meanwhile."""
    arrays, meta = persistence.parts(
        state.table, state.config.history_size, state.snapshot_extra(), state._clock()
    )
    large = [k for k, a in arrays.items() if a.nbytes >= copy_below_bytes]
    for k, a in arrays.items():
        if k not in large:
            arrays[k] = a.copy()
    return arrays, meta, large
