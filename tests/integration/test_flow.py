"""Admission and flow control through real actors: two routers, agents of declared
concurrency, selections that wait and bind when a completion frees a slot, priority
across routers, and the refusals of a saturated fleet."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

import actors
from actors.client.clients import RippleClient
from actors.core.config import FlowConfig, ServiceConfig

AGENTS = ["flow-a", "flow-b"]
SLOTS = 2


# Long enough that the higher band's router binds first even on a loaded CI machine.
BAND_YIELD_S = 0.3


@pytest.fixture(scope="module")
def client(ray_session, namespace) -> Iterator[RippleClient]:
    flow = FlowConfig(band_yield_s=BAND_YIELD_S)
    c = actors.deploy(ServiceConfig(namespace=namespace, num_shards=2, num_routers=2, flow=flow))
    for a in AGENTS:
        c.describe(a, max_concurrency=SLOTS)
    yield c
    actors.teardown(namespace)


def fill(client: RippleClient) -> list[tuple[str, str]]:
    held = []
    for _ in range(len(AGENTS) * SLOTS):
        pick = client.select().selected[0]
        assert pick.assignment_id
        held.append((pick.agent_id, pick.assignment_id))
    return held


def test_no_agent_is_given_more_than_its_concurrency_and_waiters_bind_late(client) -> None:
    held = fill(client)
    assert sorted(a for a, _ in held) == sorted(AGENTS * SLOTS)
    t0 = time.monotonic()
    with pytest.raises(actors.Saturated) as refused:
        client.select()  # wait_s 0: refused at once
    assert time.monotonic() - t0 < 1.0
    assert refused.value.reason == "saturated" and refused.value.retry_after_s > 0

    # Two waiters through the router actors (round robin: one on each router); each
    # completion frees one slot, which one of them takes.
    results: list[object] = []

    def wait() -> None:
        try:
            results.append(client.select(wait_s=10.0))
        except Exception as exc:  # recorded, asserted below
            results.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert not results  # both wait: nothing freed
    for agent, aid in held[:2]:
        assert client.complete(agent, aid).released
    for t in threads:
        t.join(timeout=15)
    picks = [r for r in results if not isinstance(r, Exception)]
    assert len(picks) == 2, results
    for r in picks:
        assert r.selected[0].assignment_id and 0.3 < r.waited_s < 10.0  # type: ignore[attr-defined]
    views = [client.agent(a) for a in AGENTS]
    assert all(v.in_flight <= SLOTS for v in views), views
    assert sum(v.in_flight for v in views) == len(AGENTS) * SLOTS


def test_an_async_local_client_shares_one_queue_and_serves_the_higher_band_first(
    client, namespace
) -> None:
    async def go() -> list[str]:
        local = actors.connect_async(namespace=namespace, fan_out="local")
        held = []
        for _ in range(len(AGENTS) * SLOTS):
            try:
                pick = (await local.select()).selected[0]
            except actors.Saturated:
                break
            held.append((pick.agent_id, pick.assignment_id))
        order: list[str] = []

        async def wait(name: str, priority: int) -> None:
            await local.select(wait_s=10.0, priority=priority)
            order.append(name)

        async def queued(bands: dict[str, int]) -> None:
            for _ in range(300):  # until both are in this process's queue (15 s at most)
                status = local.flow_status()
                assert status is not None
                waiting = status["waiting"]
                assert isinstance(waiting, dict)
                if {b: n for b, n in waiting.items() if n} == bands:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"not queued: {status}")

        # Through the router actors there is no queue in this process to show.
        assert actors.connect_async(namespace=namespace).flow_status() is None
        low = asyncio.ensure_future(wait("low", 1))
        await queued({"1": 1})
        high = asyncio.ensure_future(wait("high", 9))
        await queued({"1": 1, "9": 1})
        snapshot = await local.stats()
        assert snapshot["ready"]
        views = [await local.agent(a) for a in AGENTS]
        running = [(v.agent_id, v.in_flight) for v in views]
        assert all(n <= SLOTS for _, n in running), running
        # Free one slot: the high band takes it; then one more for the low band.
        agent = next(a for a, n in running if n)
        await local.complete(agent)
        await asyncio.wait_for(high, 10)
        await local.complete(agent)
        await asyncio.wait_for(low, 10)
        return order

    assert asyncio.run(go()) == ["high", "low"]


def test_explain_returns_the_decision_record_through_either_client(client, namespace) -> None:
    client.register(
        [{"agent_id": f"why-{i}", "signal_type": "LOAD", "value": 0.1} for i in range(3)]
    )
    pick = client.select(candidates=[f"why-{i}" for i in range(3)]).selected[0]
    rec = client.explain(pick.assignment_id)
    assert rec["agent"] == pick.agent_id and rec["chosen"][0]["agent_id"] == pick.agent_id
    local = actors.connect_async(namespace=namespace, fan_out="local")
    assert asyncio.run(local.explain(pick.assignment_id))["assignment_id"] == pick.assignment_id
    with pytest.raises(actors.NotFound):
        client.explain("ffffffff-1")


def waiting_until(client: RippleClient, bands: dict[str, int], timeout_s: float = 15.0) -> None:
    """Until the routers hold these waiting selections per band (their gauge, summed):
    a waiter that is not queued yet when the slot frees would make the order a race."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = client.metrics_snapshot()["metrics"].flow_waiting
        got = {band: n for band, n in waiting.items() if n}
        if got == bands or time.monotonic() > deadline:
            assert got == bands, got
            return
        time.sleep(0.05)


def test_a_freed_slot_goes_to_the_higher_band_whichever_router_holds_it(client, namespace) -> None:
    agent = "prio-x"
    client.describe(agent, max_concurrency=1)
    held = client.select(candidates=[agent]).selected[0]
    assert held.assignment_id
    order: list[str] = []
    picks: dict[str, str] = {}

    def wait(name: str, priority: int, skip: int) -> None:
        c = actors.connect(namespace=namespace)  # a fresh client: its first call, router 0
        for _ in range(skip):  # read-only calls move it to the next router
            c.select(candidates=[agent], assign=False)
        got = c.select(candidates=[agent], wait_s=15.0, priority=priority).selected[0]
        assert got.assignment_id
        picks[name] = got.assignment_id
        order.append(name)

    # The low band waits first, on router 0; the high band then on router 1.
    low = threading.Thread(target=wait, args=("low", 1, 0))
    low.start()
    waiting_until(client, {"1": 1})
    high = threading.Thread(target=wait, args=("high", 9, 1))
    high.start()
    waiting_until(client, {"1": 1, "9": 1})
    assert not order  # both wait: the one slot is held
    assert client.complete(agent, held.assignment_id).released
    high.join(timeout=10)
    assert order == ["high"], order  # router 0's low band yielded the slot
    assert client.complete(agent, picks["high"]).released
    low.join(timeout=10)
    assert order == ["high", "low"]
    client.complete(agent, picks["low"])
