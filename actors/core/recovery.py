"""Bringing a shard's state back, and snapshotting it without stopping its host.

``snapshot`` and ``restore`` turn a ``ShardState`` into versioned bytes and back;
``replay`` applies WAL records
(``actors.core.wal``) to one, each through the same verb that made it and at its own time
(``REPLAY``: the op table); ``snapshot_layout`` and ``snapshot_parts`` split a snapshot so
a host can copy the large arrays in pieces (``actors.cluster.snapshots`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from actors.core import persistence, wal
from actors.core.config import ShardConfig
from actors.core.errors import InvalidInput
from actors.core.metrics import Counters
from actors.core.state import ShardState


def restore(
    data: bytes,
    config: ShardConfig | None = None,
    clock: Callable[[], float] = time.time,
    seed: int | None = None,
) -> ShardState:
    """A state from ``snapshot()`` bytes; corrupt input is an ``InvalidInput``."""
    size = persistence.history_size(data)
    if not isinstance(size, int) or size < 1:
        raise InvalidInput(
            "corrupt or incompatible snapshot",
            [{"field": "history_size", "reason": f"got {size!r}"}],
        )
    config = config or ShardConfig(history_size=size)
    if config.history_size != size:
        raise InvalidInput(
            "snapshot history_size differs from config",
            [{"field": "history_size", "reason": f"snapshot has {size}"}],
        )
    state = ShardState(config, clock, seed)
    snap = persistence.load(data, state.table)
    try:
        state.table.add(snap.ids)
        for name, arr in snap.arrays.items():
            state.table.arrays[name][..., : state.table.n] = arr
        state.inflight.load_records(snap.inflight)
        state.speed.load_state_json(snap.speed)
        state.health.forget_cache()
        for agent_id, labels in snap.labels.items():
            state.labels.replace(agent_id, labels)
        counted = Counters.from_counters_json(snap.metrics)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise InvalidInput(
            "corrupt or incompatible snapshot", [{"field": "snapshot", "reason": str(exc)}]
        ) from exc
    state.metrics.record_restored(counted)
    return state


def snapshot(state: ShardState) -> bytes:
    """Versioned bytes of the whole state (arrays via ``np.savez``; no pickle)."""
    return persistence.dump(state.table, state.config.history_size, _extra(state), state.now())


def _extra(state: ShardState) -> dict[str, Any]:
    """What a snapshot holds besides the arrays: in-flight records, labels, counters."""
    return {
        "inflight": state.inflight.records(),
        "labels": {a: dict(m) for a, m in state.labels.by_agent.items()},
        "metrics": state.metrics.counters_json(),
        "speed": state.speed.state_json(),
    }


# Each WAL op, applied through the verb that logged it, at the record's time.
REPLAY: dict[str, Callable[[ShardState, wal.Record], object]] = {
    "ingest": lambda s, r: s.ingest(wal.ingest_columns(r), at_s=r.t),
    "assign": lambda s, r: s.tasks.assign_with_ids([(a, i) for a, i in r.args["pairs"]], r.t),
    "complete": lambda s, r: s.complete(
        r.args["agent"], r.args["id"], r.args["ok"], r.args["duration_s"], at_s=r.t
    ),
    "describe": lambda s, r: s.describe(
        r.args["agent"], r.args["max_concurrency"], r.args["labels"], at_s=r.t
    ),
    "delete": lambda s, r: s.delete(r.args["agent"], at_s=r.t),
    "sweep": lambda s, r: s.sweep(at_s=r.t),
}


def replay(state: ShardState, records: list[wal.Record]) -> Iterator[int]:
    """Apply WAL records in order, each at its own time; yields after each so a host can
    report progress. The journal is off meanwhile (nothing is logged twice)."""
    journal, state.journal = state.journal, None
    try:
        for i, rec in enumerate(records):
            apply = REPLAY.get(rec.op)
            if apply is None:
                raise ValueError(f"unknown WAL op {rec.op!r}")
            apply(state, rec)
            yield i
    finally:
        state.journal = journal


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
        state.table, state.config.history_size, _extra(state), state.now()
    )
    large = [k for k, a in arrays.items() if a.nbytes >= copy_below_bytes]
    for k, a in arrays.items():
        if k not in large:
            arrays[k] = a.copy()
    return arrays, meta, large
