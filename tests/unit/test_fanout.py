"""The Ray adapter and router logic over fake shards: deadlines, failures, merges."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.cluster.adapter import FailureKind, Fanout
from actors.cluster.router import RouterCore
from actors.core.config import ServiceConfig
from actors.core.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from actors.core.models import PredictParams, ScoresRequest, SelectRequest
from actors.core.partition import shard_of
from actors.core.state import ShardState


class FakeShardTransport:
    """In-process shards; a shard can be made to fail or to hang past the deadline."""

    def __init__(self, states: list[ShardState]) -> None:
        self.states = states
        self.num_shards = len(states)
        self.broken: set[int] = set()
        self.slow: set[int] = set()

    def submit(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        return (shard, method, args)

    async def _run(self, call: Any) -> Any:
        shard, method, args = call
        if shard in self.slow:
            await asyncio.sleep(10)
        if shard in self.broken:
            raise ConnectionError(f"shard {shard} died")
        # ShardActor's methods are ShardState's (the actor is thin), but for the paged scan.
        state = self.states[shard]
        if method == "overloads_page":  # the actor pages the state's scan
            return state.scan.page(*args, state.now)
        return getattr(state, method)(*args)

    def awaitable(self, ref: Any) -> Any:
        return self._run(ref)

    def is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)

    def wait(self, refs: list[Any], timeout_s: float) -> tuple[list[Any], list[Any]]:
        return [r for r in refs if r[0] not in self.slow], [r for r in refs if r[0] in self.slow]

    def get(self, ref: Any) -> Any:
        return asyncio.run(self._run(ref))


@pytest.fixture
def router(clock) -> tuple[RouterCore, FakeShardTransport]:
    states = [ShardState(clock=clock, seed=i) for i in range(3)]
    for i in range(30):
        a = f"agent-{i}"
        states[shard_of(a, 3)].ingest_dicts(
            [{"agent_id": a, "signal_type": "LOAD", "value": i / 30}]
        )
    transport = FakeShardTransport(states)
    return RouterCore(Fanout(transport, deadline_s=0.05), ServiceConfig(), seed=1), transport


def test_router_merges_the_global_top_k(router) -> None:
    core, _ = router
    res = asyncio.run(core.select(SelectRequest(k=3)))
    assert [s.agent_id for s in res.selected] == ["agent-0", "agent-1", "agent-2"]
    assert (res.shards_answered, res.shards_total, res.degraded) == (3, 3, False)


def test_failed_or_slow_shards_degrade_the_answer_instead_of_failing_it(router) -> None:
    core, transport = router
    transport.broken.add(0)
    transport.slow.add(1)
    res = asyncio.run(core.select(SelectRequest(k=3)))
    assert res.degraded and (res.shards_answered, res.shards_total) == (1, 3)
    assert all(shard_of(s.agent_id, 3) == 2 for s in res.selected)
    assert core.metrics.selections_degraded_total == 1
    stats = asyncio.run(core.stats())
    assert not stats["ready"] and [s["up"] for s in stats["shards"]] == [False, False, True]


def test_no_shard_answering_is_unavailable_and_one_owner_down_is_typed(router) -> None:
    core, transport = router
    transport.broken.update({0, 1, 2})
    with pytest.raises(Unavailable):
        asyncio.run(core.select(SelectRequest(k=1)))
    transport.broken.clear()
    transport.slow.add(shard_of("agent-4", 3))
    with pytest.raises(DeadlineExceeded):
        asyncio.run(core.agent("agent-4"))


def test_request_errors_are_raised_not_counted_as_outages(router) -> None:
    core, _ = router
    with pytest.raises(NotFound):
        asyncio.run(core.agent("nobody"))
    with pytest.raises(NotFound):
        asyncio.run(core.predict("nobody", PredictParams()))


def test_candidates_go_only_to_their_owners(router) -> None:
    core, _ = router
    cands = ["agent-3", "ghost"]
    calls = core._select_calls(SelectRequest(candidates=cands))
    assert sorted(calls) == sorted({shard_of(a, 3) for a in cands})
    res = asyncio.run(core.scores(ScoresRequest(agent_ids=["agent-3", "ghost"])))
    assert res.scores["ghost"].known is False and res.scores["agent-3"].known


def test_sync_gather_marks_the_slow_shard(router) -> None:
    core, transport = router
    transport.slow.add(2)
    got = core.fanout.gather_sync({s: ("stats", ()) for s in range(3)})
    assert sorted(got.results) == [0, 1] and got.failures[2].kind is FailureKind.NO_ANSWER
    with pytest.raises(InvalidInput):
        core.fanout._classify(InvalidInput("bad"), got, 0)


def test_an_empty_candidate_list_is_an_empty_answer_not_an_outage(router) -> None:
    """``{"candidates": []}`` asked no shard; the merge crashed on nothing to concatenate."""
    core, _ = router
    res = asyncio.run(core.select(SelectRequest(candidates=[], k=3)))
    assert res.selected == [] and res.considered == 0 and not res.degraded


def test_a_shard_bug_is_a_500_not_an_outage(router) -> None:
    """A shard that raises a plain exception has a bug: the caller gets an InternalError
    (500 at the edge), not a 503 that clients would retry forever."""
    core, transport = router

    def boom(*args: Any) -> Any:
        raise IndexError("index 3 is out of bounds")

    transport.states[0].partial_select = boom  # type: ignore[method-assign]
    with pytest.raises(InternalError) as info:
        asyncio.run(core.select(SelectRequest(k=2)))
    assert "IndexError" in info.value.message and "out of bounds" not in info.value.message


def test_overloads_come_in_bounded_pages_with_a_cursor(clock) -> None:
    states = [ShardState(clock=clock, seed=i) for i in range(3)]
    for i in range(40):
        a = f"hot-{i}"
        st = states[shard_of(a, 3)]
        for t in range(6):
            clock.advance(0.0)
            st.ingest_dicts(
                [
                    {
                        "agent_id": a,
                        "signal_type": "LOAD",
                        "value": 0.5 + 0.08 * t,
                        "timestamp": clock() - 50 + 10 * t,
                    }
                ]
            )
    core = RouterCore(Fanout(FakeShardTransport(states), 1.0), ServiceConfig(), seed=1)
    params = PredictParams(horizon_s=60, threshold=0.8, min_probability=0.5)
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        page = asyncio.run(core.overloads(params, cursor, limit=9))
        assert len(page["overloads"]) <= 9
        probs = [p.probability for p in page["overloads"]]
        assert probs == sorted(probs, reverse=True)
        seen += [p.agent_id for p in page["overloads"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages >= 5 and sorted(seen) == sorted(f"hot-{i}" for i in range(40))
    with pytest.raises(InvalidInput, match="cursor"):
        asyncio.run(core.overloads(params, "1,2", limit=9))
