"""Decision records: why an assignment went where it went, kept by the owning shard."""

from __future__ import annotations

import asyncio

import pytest

from actors.cluster.adapter import Fanout
from actors.cluster.router import RouterCore
from actors.core.config import ServiceConfig, ShardConfig
from actors.core.errors import NotFound
from actors.core.models import SelectRequest
from actors.core.partition import shard_of
from actors.core.state import ShardState
from tests.unit.helpers import sig
from tests.unit.test_flow import LongPollShards


def fleet(clock, **cfg) -> ShardState:
    state = ShardState(ShardConfig(**cfg), clock=clock, seed=1)
    for i, load in enumerate((0.1, 0.5, 0.9, 0.3)):
        state.ingest_dicts([sig(f"a{i}", "LOAD", load)])
    state.describe("a2", max_concurrency=1)
    state.assign(["a2"])  # full: passed over for want of headroom
    state.describe("a3", labels={"pool": "x"})
    return state


def test_an_assigning_selection_leaves_a_record_that_the_outcome_completes(clock) -> None:
    state = fleet(clock)
    # balanced (the default): each shard returns its best few, so runners-up are known
    # (best returns k per shard: a record of it has only the picks).
    req = SelectRequest(tenant="t1", priority=7, exclude=["a1"])
    pick = state.select(req).selected[0]
    rec = state.decision(pick.assignment_id)
    assert rec is not None and rec["agent"] == pick.agent_id == "a0"
    assert rec["request"]["tenant"] == "t1" and rec["request"]["priority"] == 7
    shard = rec["shards"][0]
    assert shard["removed"]["labels_or_excluded"] == 1  # a1 excluded
    assert shard["removed"]["no_headroom"] == 1  # a2 full
    assert rec["chosen"][0]["agent_id"] == "a0" and "load" in rec["chosen"][0]["scores"]
    assert [r["agent_id"] for r in rec["runners_up"]] == ["a3"]
    assert rec["outcome"] is None
    state.complete("a0", pick.assignment_id, ok=False, duration_s=0.2)
    assert state.decision(pick.assignment_id)["outcome"]["ok"] is False
    # Read-only selections leave none.
    assert state.select(SelectRequest(assign=False)).selected[0].assignment_id is None


def test_records_are_a_bounded_ring(clock) -> None:
    state = fleet(clock, decision_records=3)
    ids = [state.select(SelectRequest()).selected[0].assignment_id for _ in range(5)]
    assert [state.decision(a) is not None for a in ids] == [False, False, True, True, True]
    off = fleet(clock, decision_records=0)
    assert off.decision(off.select(SelectRequest()).selected[0].assignment_id) is None


def test_the_router_records_every_shard_and_finds_the_record_on_any(clock) -> None:
    states = [ShardState(clock=clock, seed=i) for i in range(3)]
    for i in range(12):
        a = f"agent-{i}"
        states[shard_of(a, 3)].ingest_dicts([sig(a, "LOAD", i / 12)])
    router = RouterCore(Fanout(LongPollShards(states), deadline_s=1.0), ServiceConfig(), seed=1)

    async def go() -> None:
        pick = await router.select(SelectRequest(strategy="best", k=2, weights={"load": 1}))
        rec = await router.decision(pick.selected[1].assignment_id)
        assert [c["agent_id"] for c in rec["chosen"]] == ["agent-0", "agent-1"]
        assert rec["agent"] == "agent-1"
        assert sorted(s["shard"] for s in rec["shards"]) == [0, 1, 2]
        assert sum(s["considered"] for s in rec["shards"]) == 12
        assert rec["runners_up"][0]["agent_id"] == "agent-2"
        with pytest.raises(NotFound):
            await router.decision("00000000-1")

    asyncio.run(go())
