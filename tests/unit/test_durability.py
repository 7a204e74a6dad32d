"""A shard's durability without Ray: restore = snapshot + WAL, torn tails, pruning, locks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from actors.cluster.durability import ShardDurability
from actors.cluster.storage import LocalStorage
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.models import SelectRequest
from actors.core.state import ShardState

from .helpers import sig


def config(tmp_path: Path, **kw) -> DurabilityConfig:
    return DurabilityConfig(mode="wal", fsync="always", storage_path=str(tmp_path), **kw)


def views(state: ShardState) -> dict:
    return {a: state.agent(a).model_dump() for a in sorted(state.agent_ids())}


def reopen(cfg: DurabilityConfig, old: ShardDurability | None = None) -> tuple:
    """Close ``old`` (a stopped shard) and start a shard on the same storage."""
    if old is not None:
        old.close()
    d = ShardDurability(cfg, 0, "test")
    return d, d.restore(ShardConfig(), clock=lambda: 1_800_000_000.0)


def test_restore_is_the_newest_snapshot_plus_the_wal_after_it(tmp_path) -> None:
    cfg = config(tmp_path, keep_snapshots=2)
    d, state = reopen(cfg)
    assert len(state) == 0 and d.restored_agents == 0
    state.ingest_dicts([sig(f"a{i}", "LOAD", i / 10) for i in range(5)])
    picked = state.select(SelectRequest(k=2)).selected
    asyncio.run(d.snapshot(state))
    state.ingest_dicts([sig("late", "CAPACITY", 0.9)])
    state.describe("a1", max_concurrency=3, labels={"tier": "gold"})
    state.complete(picked[0].agent_id, picked[0].assignment_id)
    before = views(state)
    counted = state.counters().signals_total

    d2, back = reopen(cfg, d)
    assert views(back) == before
    assert back.counters().signals_total == counted  # counters restored, not zeroed
    assert d2.restored_agents == 6 and d2.report.replayed_records == 3
    # A second snapshot prunes the WAL it covers; the oldest snapshots go past the limit.
    asyncio.run(d2.snapshot(back))
    asyncio.run(d2.snapshot(back))
    snaps = [n for n in LocalStorage(tmp_path / "shard-0").names() if n.startswith("snap-")]
    assert len(snaps) == 2
    segments = d2.wal.segments() if d2.wal else []
    # The WAL from the oldest kept snapshot on: it can still be restored from, should
    # the newest be found damaged.
    oldest = min(int(n[5:17]) for n in snaps)
    assert [s for s, _ in segments] == [oldest, oldest + 1]
    d3, again = reopen(cfg, d2)
    assert views(again) == before and d3.report.replayed_records == 0
    d3.close()


def test_a_torn_wal_tail_is_dropped_and_logged_not_fatal(tmp_path, caplog) -> None:
    cfg = config(tmp_path)
    d, state = reopen(cfg)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    state.ingest_dicts([sig("b", "LOAD", 0.2)])
    assert d.wal is not None
    seg = d.wal.segments()[-1][1]
    d.close()
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # a write cut short by the crash
    d2, back = reopen(cfg)
    assert back.agent_ids() == ["a"]
    assert d2.report.dropped_tails and "torn" in d2.report.dropped_tails[0]
    assert "WAL tail dropped" in caplog.text
    # It writes on in a new segment, so the torn one is never appended to.
    back.ingest_dicts([sig("c", "LOAD", 0.3)])
    d3, third = reopen(cfg, d2)
    assert third.agent_ids() == ["a", "c"]
    d3.close()


def test_an_unreadable_snapshot_falls_back_to_the_one_before(tmp_path) -> None:
    cfg = config(tmp_path, keep_snapshots=3)
    d, state = reopen(cfg)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    asyncio.run(d.snapshot(state))
    state.ingest_dicts([sig("b", "LOAD", 0.2)])
    asyncio.run(d.snapshot(state))
    d.close()
    newest = sorted((tmp_path / "shard-0").glob("snap-*.npz"))[-1]
    newest.write_bytes(b"not an archive")
    # The WAL segments before the newest snapshot are gone, so what only the newest
    # snapshot held ("b") is lost; "a" comes back from the older one.
    d2, back = reopen(cfg)
    assert "a" in back.agent_ids()
    d2.close()


def test_snapshot_mode_keeps_no_wal(tmp_path) -> None:
    cfg = DurabilityConfig(mode="snapshot", storage_path=str(tmp_path))
    d, state = reopen(cfg)
    state.ingest_dicts([sig("a", "LOAD", 0.1)])
    assert d.wal is None and state.journal is None
    asyncio.run(d.snapshot(state))
    state.ingest_dicts([sig("lost", "LOAD", 0.1)])  # after the last snapshot
    _, back = reopen(cfg, d)
    assert back.agent_ids() == ["a"]


def test_two_live_shards_cannot_share_a_wal(tmp_path) -> None:
    cfg = config(tmp_path)
    d, _ = reopen(cfg)
    with pytest.raises(RuntimeError, match="in use"):
        ShardDurability(cfg, 0, "test")
    d.close()


def test_durability_needs_a_storage_path() -> None:
    with pytest.raises(ValueError, match="storage_path"):
        DurabilityConfig(mode="wal")
