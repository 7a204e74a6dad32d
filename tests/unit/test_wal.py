"""The write-ahead log: every change is a record, a replay rebuilds the same state, and a
torn or corrupt tail is dropped, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from actors.core import recovery, wal
from actors.core.config import ShardConfig
from actors.core.models import SelectRequest
from actors.core.state import ShardState

from .helpers import sig


def journaled(clock) -> tuple[ShardState, list[bytes]]:
    log: list[bytes] = []
    state = ShardState(ShardConfig(history_retention_s=10.0), clock=clock, seed=1)
    state.journal = log.append
    return state, log


def workload(state: ShardState, clock) -> None:
    """Every kind of change a shard logs."""
    state.ingest_dicts(
        [
            sig("a", "LOAD", 0.2, ttl_s=30.0),
            sig("b", "LOAD", 0.6),
            sig("c", "QUALITY", 0.9, confidence=0.5),
            sig("bad id/", "LOAD", 0.1),  # rejected: not logged
            sig("a", "LOAD", 2.0),  # rejected
            sig("d", "COST", 0.3, timestamp=clock() - 5000.0, ttl_s=60.0),  # history only
        ]
    )
    clock.advance(1.0)
    picked = state.select(SelectRequest(k=2)).selected
    state.describe("b", max_concurrency=4, labels={"zone": "eu"})
    clock.advance(0.5)
    state.complete(picked[0].agent_id, picked[0].assignment_id, ok=True, duration_s=0.4)
    state.report_tasks(["c", "c"], [("c", False, None)])
    state.delete("d")
    clock.advance(40.0)  # a's LOAD expires; the sweep drops nothing yet (retention)
    state.sweep()
    state.ingest_dicts([sig("a", "LOAD", 0.5), sig("e", "CAPACITY", 0.7)])


def views(state: ShardState) -> dict:
    return {a: state.agent(a).model_dump() for a in sorted(state.agent_ids())}


def test_replay_rebuilds_the_same_state(clock) -> None:
    state, log = journaled(clock)
    workload(state, clock)
    replayed = ShardState(ShardConfig(history_retention_s=10.0), clock=clock, seed=2)
    records = wal.decode(wal.SEGMENT_HEADER + b"".join(log))
    assert records.torn is None
    assert [r.op for r in records.records] == [
        "ingest", "assign", "describe", "complete", "assign", "complete", "delete", "sweep",
        "ingest",
    ]  # fmt: skip
    list(recovery.replay(replayed, records.records))
    assert views(replayed) == views(state)
    assert replayed.table.ids == state.table.ids
    for name, arr in state.table.arrays.items():
        n = state.table.n
        np.testing.assert_array_equal(
            arr[..., :n], replayed.table.arrays[name][..., :n], err_msg=name
        )
    assert replayed.inflight.records() == state.inflight.records()
    assert replayed.journal is None and replayed._clock is clock


def test_open_assignment_ids_survive_a_replay(clock) -> None:
    state, log = journaled(clock)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    aid = state.assign(["a"])["a"]
    replayed = ShardState(clock=clock)
    list(recovery.replay(replayed, wal.decode(wal.SEGMENT_HEADER + b"".join(log)).records))
    done = replayed.complete("a", aid)
    assert done.released and done.assignment_id == aid


@pytest.mark.parametrize("cut", [1, 5, 9, 30])
def test_a_torn_tail_is_dropped_with_a_reason(clock, cut) -> None:
    state, log = journaled(clock)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    state.ingest_dicts([sig("b", "LOAD", 0.2)])
    data = wal.SEGMENT_HEADER + b"".join(log)
    torn = wal.decode(data[:-cut])
    assert [r.op for r in torn.records] == ["ingest"] and torn.torn
    assert torn.good_bytes == len(wal.SEGMENT_HEADER) + len(log[0])


def test_a_flipped_byte_loses_that_record_only(clock) -> None:
    state, log = journaled(clock)
    for i in range(3):
        state.ingest_dicts([sig(f"a{i}", "LOAD", 0.1)])
    data = bytearray(wal.SEGMENT_HEADER + b"".join(log))
    second = len(wal.SEGMENT_HEADER) + len(log[0])
    data[second + 20] ^= 0xFF  # inside the second record
    out = wal.decode(bytes(data))
    assert "checksum" in (out.torn or "")
    # Resynchronised on the third record: only the damaged one is lost.
    ids = [wal.ingest_columns(r).agent_ids for r in out.records]
    assert ids == [["a0"], ["a2"]]
    assert out.lost == [(second, second + len(log[1]))] and out.damaged_inside
    assert wal.decode(b"garbage").torn and not wal.decode(b"garbage").records


def test_nothing_is_logged_without_a_journal_and_reads_log_nothing(clock) -> None:
    state, log = journaled(clock)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    n = len(log)
    state.select(SelectRequest(assign=False))
    state.scores(["a"])
    state.agent("a")
    state.complete("ghost")  # unknown agent: no change, no record
    state.delete("ghost")
    assert len(log) == n
