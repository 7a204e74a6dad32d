"""Admission and flow control: headroom in the core, the plain queue, and a router's
waiting selections over fake shards (late binding, priorities, fairness, shedding,
cancellation), all without Ray."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np
import pytest

from actors.cluster.adapter import Fanout
from actors.cluster.router import RouterCore
from actors.core.config import FlowConfig, ServiceConfig, ShardConfig
from actors.core.errors import Saturated
from actors.core.flow import FlowQueue, Waiter, fair_shares, jain_index
from actors.core.models import SelectRequest
from actors.core.state import ShardState
from tests.unit.helpers import sig

# ---------------------------------------------------------------------- headroom (core)


def full_fleet(clock: Any, slots: int = 2, agents: int = 2) -> ShardState:
    state = ShardState(clock=clock, seed=1)
    for i in range(agents):
        state.describe(f"a{i}", max_concurrency=slots)
        state.ingest_dicts([sig(f"a{i}", "LOAD", 0.0)])
    return state


def test_an_assigning_select_takes_only_agents_with_a_free_slot(clock) -> None:
    state = full_fleet(clock)
    picks = [state.select(SelectRequest()).selected[0] for _ in range(4)]
    assert sorted(p.agent_id for p in picks) == ["a0", "a0", "a1", "a1"]
    with pytest.raises(Saturated) as refused:
        state.select(SelectRequest())
    assert refused.value.reason == "saturated" and refused.value.retry_after_s > 0
    # Read-only selections still answer, and a completion frees a slot at once.
    assert state.select(SelectRequest(assign=False)).selected
    epoch = state.capacity_epoch
    state.complete(picks[0].agent_id, picks[0].assignment_id, duration_s=1.0)
    assert state.capacity_epoch > epoch
    assert state.select(SelectRequest()).selected[0].agent_id == picks[0].agent_id


def test_unknown_concurrency_always_has_headroom(clock) -> None:
    state = ShardState(clock=clock, seed=1)
    state.ingest_dicts([sig("a", "LOAD", 0.9)])
    assert all(state.select(SelectRequest()).selected for _ in range(50))


def test_concurrency_learned_from_load_reports_bounds_headroom(clock) -> None:
    state = ShardState(ShardConfig(default_task_load=0.3), clock=clock, seed=1)
    state.ingest_dicts([sig("a", "LOAD", 0.0)])
    for _ in range(5):  # each task moves LOAD by 0.25: four fill it
        clock.advance(1)
        aid = state.assign(["a"])["a"]
        clock.advance(1)
        state.ingest_dicts([sig("a", "LOAD", 0.25)])
        state.complete("a", aid)
        clock.advance(1)
        state.ingest_dicts([sig("a", "LOAD", 0.0)])
    assert state.agent("a").load_per_task == pytest.approx(0.25, rel=0.05)
    got = 0
    with pytest.raises(Saturated):
        for _ in range(10):
            state.select(SelectRequest())
            got += 1
    assert got == 4


def test_assign_with_admission_refuses_an_agent_another_router_filled(clock) -> None:
    state = full_fleet(clock, slots=1, agents=1)
    assert state.assign(["a0"], admit=True)
    assert state.assign(["a0"], admit=True) == {}
    assert state.assign(["a0"])  # a task placed elsewhere is recorded regardless


def test_the_refusal_predicts_when_a_slot_frees(clock) -> None:
    state = full_fleet(clock, slots=2, agents=1)
    for _ in range(6):  # learn a 4 s task time
        aid = state.select(SelectRequest()).selected[0].assignment_id
        state.complete("a0", aid, duration_s=4.0)
    state.select(SelectRequest())
    state.select(SelectRequest())
    with pytest.raises(Saturated) as refused:
        state.select(SelectRequest())
    assert refused.value.retry_after_s == pytest.approx(2.0, rel=0.3)  # 4 s over 2 slots


# ---------------------------------------------------------------------- the plain queue


def waiter(priority: int = 5, tenant: str = "t", at: float = 0.0) -> Waiter:
    return Waiter(priority, tenant, at)


def test_a_higher_band_is_always_served_first() -> None:
    q = FlowQueue()
    low = [waiter(2) for _ in range(3)]
    for w in low:
        q.push(w)
    high = waiter(7)
    q.push(high)
    assert q.order(0.0, 10)[0] is high
    assert q.top_band() == 7 and q.waiting() == {2: 3, 7: 1}


def test_within_a_band_the_tenant_with_least_service_goes_first() -> None:
    q = FlowQueue()
    for _ in range(20):
        q.served("heavy", 0.0)
    heavy = [waiter(tenant="heavy") for _ in range(5)]
    for w in heavy:
        q.push(w)
    light = waiter(tenant="light")
    q.push(light)
    order = q.order(0.0, 6)
    assert order[0] is light and order[1:] == heavy
    # Two tenants with equal service alternate, oldest first within each.
    q2 = FlowQueue()
    a = [waiter(tenant="a") for _ in range(3)]
    b = [waiter(tenant="b") for _ in range(3)]
    for w in a + b:
        q2.push(w)
    assert q2.order(0.0, 6) == [a[0], b[0], a[1], b[1], a[2], b[2]]


def test_service_fades_with_its_half_life() -> None:
    q = FlowQueue(FlowConfig(fairness_half_life_s=10.0))
    q.served("x", 0.0)
    assert q.attained.get("x", 10.0) == pytest.approx(0.5)


def test_a_full_band_sheds_its_oldest_and_a_full_queue_the_lowest_bands() -> None:
    q = FlowQueue(FlowConfig(max_waiting_per_band=2, max_waiting=2))
    first, second, third = waiter(5), waiter(5), waiter(5)
    assert q.push(first) == [] and q.push(second) == []
    assert q.push(third) == [first]
    high = waiter(9)
    assert q.push(high) == [second]  # over two in all: the lowest band's oldest goes
    lowest = waiter(0)
    assert q.push(lowest) == [lowest]  # it is the lowest band itself
    assert len(q) == 2 and not q.remove(first) and q.remove(third)


def test_tenants_remembered_are_bounded() -> None:
    q = FlowQueue(FlowConfig(max_tenants=10))
    for i in range(100):
        q.offered(f"t{i}", float(i))
    assert len(q.demanded.values) <= 10


def test_jain_index_measures_distance_from_max_min_fairness() -> None:
    assert fair_shares(np.array([1.0, 10.0]), 6.0).tolist() == [1.0, 5.0]
    # The light tenant got all it asked, the heavy one the rest: fair.
    assert jain_index(np.array([1.0, 5.0]), np.array([1.0, 10.0])) == pytest.approx(1.0)
    # Served in proportion to demand (FIFO), the light tenant got 55% of its fair share.
    fifo = jain_index(np.array([0.55, 5.45]), np.array([1.0, 10.0]))
    assert fifo is not None and 0.85 < fifo < 0.95
    starved = jain_index(np.array([0.0, 6.0]), np.array([1.0, 10.0]))
    assert starved == pytest.approx(0.5)
    assert jain_index(np.array([0.0]), np.array([0.0])) is None


# ---------------------------------------------------------------------- a router's queue


class LongPollShards:
    """In-process shards that answer ``wait_capacity`` as the shard actor does."""

    def __init__(self, states: list[ShardState]) -> None:
        self.states = states
        self.num_shards = len(states)
        self.woken: asyncio.Event | None = None
        self.bands: list[int] = []  # the band each long-poll said was waiting

    def submit(self, shard: int, method: str, args: tuple[Any, ...]) -> Any:
        return (shard, method, args)

    async def _run(self, call: Any) -> Any:
        shard, method, args = call
        state = self.states[shard]
        if method == "wait_capacity":
            seen, timeout_s, band, _ = args
            self.bands.append(band)
            if state.capacity_epoch == seen:
                self.woken = self.woken or asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), timeout_s)
            return state.capacity_epoch
        out = getattr(state, method)(*args)
        if self.woken is not None:
            self.woken.set()
            self.woken = None
        return out

    def awaitable(self, ref: Any) -> Any:
        return self._run(ref)

    def is_outage(self, exc: BaseException) -> bool:
        return False


def make_router(clock: Any, slots: int = 1, agents: int = 1, **flow: Any) -> RouterCore:
    state = full_fleet(clock, slots=slots, agents=agents)
    config = ServiceConfig(flow=FlowConfig(**flow))
    return RouterCore(Fanout(LongPollShards([state]), deadline_s=1.0), config, seed=1)


def complete_soon(router: RouterCore, agent_id: str, aid: str | None, after_s: float) -> Any:
    async def later() -> None:
        await asyncio.sleep(after_s)
        await router.complete(agent_id, aid, True, None)

    return asyncio.ensure_future(later())


def test_wait_zero_into_a_full_fleet_is_refused_at_once(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        await router.select(SelectRequest())
        with pytest.raises(Saturated) as refused:
            await router.select(SelectRequest())
        assert refused.value.reason == "saturated" and refused.value.waited_s == 0.0
        assert router.metrics.flow_shed_total == {"saturated": 1}
        assert (await router.select(SelectRequest(assign=False))).selected  # never waits

    asyncio.run(go())


def test_a_waiting_selection_binds_when_a_completion_frees_a_slot(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        first = (await router.select(SelectRequest())).selected[0]
        done = complete_soon(router, "a0", first.assignment_id, 0.05)
        got = await router.select(SelectRequest(wait_s=5.0))
        await done
        assert got.selected[0].agent_id == "a0" and got.selected[0].assignment_id
        assert 0.03 < got.waited_s < 1.0
        assert sum(h.count for h in router.metrics.flow_wait_s.values()) == 1

    asyncio.run(go())


def test_a_wait_that_runs_out_is_refused_and_leaves_the_queue(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        await router.select(SelectRequest())
        with pytest.raises(Saturated) as refused:
            await router.select(SelectRequest(wait_s=0.05))
        assert refused.value.waited_s >= 0.05 and len(router.flow.queue) == 0

    asyncio.run(go())


def test_freed_slots_go_to_the_higher_band_then_to_the_lighter_tenant(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        held = (await router.select(SelectRequest())).selected[0]
        for _ in range(3):
            router.flow.queue.served("heavy", router.flow.clock())
        order: list[str] = []

        async def wait(name: str, **kw: Any) -> str:
            got = await router.select(SelectRequest(wait_s=5.0, **kw))
            order.append(name)
            sel = got.selected[0]
            complete_soon(router, sel.agent_id, sel.assignment_id, 0.02)
            return name

        tasks = [asyncio.ensure_future(wait("heavy-low", tenant="heavy"))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.ensure_future(wait("light-low", tenant="light")))
        await asyncio.sleep(0.01)
        tasks.append(asyncio.ensure_future(wait("high", tenant="heavy", priority=9)))
        await asyncio.sleep(0.01)
        complete_soon(router, held.agent_id, held.assignment_id, 0.0)
        await asyncio.gather(*tasks)
        assert order == ["high", "light-low", "heavy-low"]

    asyncio.run(go())


def test_a_long_poll_tells_the_shard_the_highest_band_waiting(clock) -> None:
    # The shard answers routers holding lower bands later (``band_yield_s``), so the
    # router holding the highest band binds a freed slot first (the real actors:
    # tests/integration/test_flow.py).
    async def go() -> list[int]:
        router = make_router(clock)
        held = (await router.select(SelectRequest())).selected[0]
        waiting = asyncio.ensure_future(router.select(SelectRequest(wait_s=5.0, priority=7)))
        await asyncio.sleep(0.01)
        complete_soon(router, held.agent_id, held.assignment_id, 0.0)
        await waiting
        return router.flow.fanout.transport.bands

    assert asyncio.run(go())[0] == 7


def test_a_full_queue_sheds_the_oldest_waiter(clock) -> None:
    async def go() -> None:
        router = make_router(clock, max_waiting_per_band=1)
        await router.select(SelectRequest())
        old = asyncio.ensure_future(router.select(SelectRequest(wait_s=5.0)))
        await asyncio.sleep(0.01)
        new = asyncio.ensure_future(router.select(SelectRequest(wait_s=0.05)))
        with pytest.raises(Saturated) as shed:
            await old
        assert shed.value.reason == "shed"
        with pytest.raises(Saturated):
            await new
        assert router.metrics.flow_shed_total == {"shed": 1, "saturated": 1}

    asyncio.run(go())


def test_a_caller_that_goes_away_leaves_the_queue(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        await router.select(SelectRequest())
        waiting = asyncio.ensure_future(router.select(SelectRequest(wait_s=5.0)))
        await asyncio.sleep(0.01)
        assert len(router.flow.queue) == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert len(router.flow.queue) == 0 and router.metrics.flow_waiting == {}

    asyncio.run(go())


def test_a_newcomer_does_not_overtake_waiters_of_its_band(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        await router.select(SelectRequest())
        waiting = asyncio.ensure_future(router.select(SelectRequest(wait_s=0.2)))
        await asyncio.sleep(0.01)
        with pytest.raises(Saturated, match="waiting"):
            await router.select(SelectRequest())
        with pytest.raises(Saturated):
            await waiting

    asyncio.run(go())


# ---------------------------------------------------------------------- refusals


def test_a_refusal_survives_pickling_and_maps_to_429_with_retry_after() -> None:
    import json
    import pickle

    from serve.errors import error_response

    err = Saturated("full", [{"field": "wait_s", "reason": "r"}], 2.2, "shed", 0.5)
    back = pickle.loads(pickle.dumps(err))
    assert (back.retry_after_s, back.reason, back.waited_s, back.details) == (
        2.2,
        "shed",
        0.5,
        [{"field": "wait_s", "reason": "r"}],
    )
    resp = error_response(back, "rid-1")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
    body = json.loads(bytes(resp.body))["error"]
    assert body["code"] == "saturated" and body["reason"] == "shed"
    assert body["request_id"] == "rid-1"
    soon = error_response(Saturated("full", retry_after_s=0.01), "rid-2")
    assert soon.headers["Retry-After"] == "1"  # whole seconds, never 0


def test_a_wait_that_runs_out_during_a_failed_try_is_refused_not_held(clock) -> None:
    async def go() -> None:
        router = make_router(clock)
        await router.select(SelectRequest())
        real = router.flow.select_once

        async def slow_full(req: SelectRequest, waited_s: float, parent: Any) -> Any:
            if waited_s > 0:  # the dispatcher's try: still full, and slow to say so
                await asyncio.sleep(0.1)
            return await real(req, waited_s, parent)

        router.flow.select_once = slow_full  # type: ignore[method-assign]
        with pytest.raises(Saturated):
            await asyncio.wait_for(router.select(SelectRequest(wait_s=0.05)), 2.0)
        assert len(router.flow.queue) == 0

    asyncio.run(go())
