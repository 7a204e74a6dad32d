"""Admission and flow control through real actors: two routers, agents of declared
concurrency, selections that wait and bind when a completion frees a slot, and the
refusals of a saturated fleet."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

import actors
from actors.client.clients import RippleClient
from actors.core.config import ServiceConfig

AGENTS = ["flow-a", "flow-b"]
SLOTS = 2


@pytest.fixture(scope="module")
def client(ray_session, namespace) -> Iterator[RippleClient]:
    c = actors.deploy(ServiceConfig(namespace=namespace, num_shards=2, num_routers=2))
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

        low = asyncio.ensure_future(wait("low", 1))
        await asyncio.sleep(0.2)
        high = asyncio.ensure_future(wait("high", 9))
        await asyncio.sleep(0.2)
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
