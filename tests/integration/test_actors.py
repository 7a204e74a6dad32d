"""Real Ray actors: sharding, router merge, discovery by name, shard failure."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

import actors
from actors.client.clients import RippleClient, wait_until_ready
from actors.cluster.deployment import SHARD_NAME
from actors.core.config import ServiceConfig, ShardConfig
from actors.core.errors import InvalidInput, NotDeployed, NotFound
from actors.core.models import SelectRequest, Weights
from actors.core.state import ShardState

TYPES = ["LOAD", "CAPACITY", "QUALITY", "COST", "AVAILABILITY", "LATENCY"]


@pytest.fixture(scope="module")
def client(ray_session, namespace) -> Iterator[RippleClient]:
    config = ServiceConfig(
        namespace=namespace,
        num_shards=3,
        num_routers=2,
        shard_deadline_s=3.0,
        # A short retention so the sweep visibly drops agents (reads alone never do).
        shard=ShardConfig(sweep_interval_s=0.5, history_retention_s=1.0),
    )
    c = actors.deploy(config)
    yield c
    actors.teardown(namespace)


def random_batch(rng: np.random.Generator, n_agents: int, n: int, prefix: str) -> list[dict]:
    return [
        {
            "agent_id": f"{prefix}-{rng.integers(n_agents)}",
            "signal_type": TYPES[rng.integers(6)],
            "value": float(rng.random()),
            "confidence": float(rng.uniform(0.5, 1)),
            "ttl_s": 3600.0,
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cross_shard_selection_equals_single_shard_reference(client, seed) -> None:
    rng = np.random.default_rng(seed)
    batch = random_batch(rng, 300, 2000, f"ref{seed}")
    reference = ShardState(seed=seed)
    assert client.register(batch).accepted == reference.ingest_dicts(batch).accepted == 2000
    prefix_ids = sorted({b["agent_id"] for b in batch})
    for weights in (None, Weights(quality=1, latency=1), Weights(load=3, cost=1)):
        cands = [prefix_ids[i] for i in rng.choice(len(prefix_ids), 120, replace=False)]
        req = SelectRequest(candidates=cands, k=10, weights=weights, strategy="best", assign=False)
        got, want = client.select_request(req), reference.select(req)
        assert [s.agent_id for s in got.selected] == [s.agent_id for s in want.selected]
        assert [s.score for s in got.selected] == pytest.approx(
            [s.score for s in want.selected], abs=1e-4
        )
        assert got.considered == want.considered == 120 and not got.degraded
    scores = client.scores(prefix_ids[:50]).scores
    ref_scores = reference.scores(prefix_ids[:50])
    assert {a: round(s.score, 4) for a, s in scores.items()} == {
        a: round(s.score, 4) for a, s in ref_scores.items()
    }


def test_all_agents_topk_spans_every_shard(client) -> None:
    client.register(
        [{"agent_id": f"top-{i}", "signal_type": "QUALITY", "value": 1.0} for i in range(30)]
    )
    # The score's top 30 (balanced would rank by predicted time per successful task).
    res = client.select(k=30, weights={"quality": 1}, strategy="best")
    assert {s.agent_id for s in res.selected} == {f"top-{i}" for i in range(30)}
    assert res.shards_answered == res.shards_total == 3


def test_per_item_errors_come_back_through_the_client(client) -> None:
    batch = [
        {"agent_id": "err-ok", "signal_type": "LOAD", "value": 0.1},
        {"agent_id": "err-bad", "signal_type": "LOAD", "value": float("nan")},
        {"agent_id": "bad id", "signal_type": "LOAD", "value": 0.1},
        {"agent_id": "err-ok2", "signal_type": "VIBES", "value": 0.1},
        {"agent_id": 42, "signal_type": "LOAD", "value": 0.1},
    ]
    res = client.register(batch)
    assert res.accepted == 1
    assert [(r.index, r.field) for r in res.rejected] == [
        (1, "value"),
        (2, "agent_id"),
        (3, "signal_type"),
        (4, "agent_id"),
    ]
    with pytest.raises(NotFound):
        client.agent("never-seen")
    with pytest.raises(InvalidInput):
        actors.deploy(client.config.model_copy(update={"num_shards": 5}))


def test_assign_complete_describe_and_delete_through_the_router(client) -> None:
    client.register(
        [
            {"agent_id": "rsv-a", "signal_type": "LOAD", "value": 0.0},
            {"agent_id": "rsv-b", "signal_type": "LOAD", "value": 0.05},
        ]
    )
    client.describe("rsv-a", max_concurrency=4, labels={"skill": "sql"})
    first = client.select(candidates=["rsv-a", "rsv-b"], strategy="best").selected[0]
    assert first.agent_id == "rsv-a" and first.assignment_id
    view = client.agent("rsv-a")
    assert view.in_flight == 1 and view.estimated_load == pytest.approx(0.25)
    assert view.labels == {"skill": "sql"}
    # The owner shard saw the assignment: the next selection, from any router, goes on.
    second = client.select(candidates=["rsv-a", "rsv-b"], strategy="best").selected[0]
    assert second.agent_id == "rsv-b"
    assert client.complete("rsv-a", first.assignment_id, ok=True, duration_s=0.5).released
    assert client.agent("rsv-a").in_flight == 0
    assert client.select(require_labels={"skill": "sql"}, k=5).selected[0].agent_id == "rsv-a"
    assert client.delete("rsv-a") and not client.delete("rsv-a")
    assert client.complete("rsv-a").released is False  # gone, and not re-created


def test_concurrent_selections_from_many_callers_spread_over_agents(
    client, ray_session, namespace
) -> None:
    """Eight Ray tasks, each its own client (its own router choice), select 10 times at
    once over 20 equal agents: the owner shards count every assignment, so no agent is
    piled on as a per-router argmax would."""
    agents = [f"conc-{i}" for i in range(20)]
    for a in agents:
        client.describe(a, max_concurrency=10)
    client.register([{"agent_id": a, "signal_type": "LOAD", "value": 0.2} for a in agents])

    @ray_session.remote(num_cpus=0.1)
    def caller(ns: str, agents: list[str]) -> list[str]:
        import actors as a

        c = a.connect(namespace=ns)
        return [c.select(candidates=agents).selected[0].agent_id for _ in range(10)]

    picks = [
        p
        for part in ray_session.get([caller.remote(namespace, agents) for _ in range(8)])
        for p in part
    ]
    counts = collections.Counter(picks)
    assert len(picks) == 80
    # 80 picks over 20 agents: 4 each when spread perfectly; one argmax would take 80.
    assert max(counts.values()) <= 8, counts
    assert sum(client.agent(a).in_flight for a in agents) == 80


def test_discovery_from_a_ray_task(client, ray_session, namespace) -> None:
    client.register([{"agent_id": "task-best", "signal_type": "QUALITY", "value": 1.0}])

    @ray_session.remote(num_cpus=0.1)
    def route() -> str:
        c = actors.connect(namespace=namespace)
        return (
            c.select(candidates=["task-best", "task-other"], weights={"quality": 1})
            .selected[0]
            .agent_id
        )

    assert ray_session.get(route.remote(), timeout=60) == "task-best"


def test_discovery_from_a_separate_driver(client, ray_session, namespace) -> None:
    client.register([{"agent_id": "proc-a", "signal_type": "COST", "value": 0.0}])
    address = ray_session.get_runtime_context().gcs_address
    code = (
        "import json, actors\n"
        f"c = actors.connect(namespace={namespace!r}, address={address!r})\n"
        "r = c.select(candidates=['proc-a', 'proc-b'], weights={'cost': 1}, strategy='best')\n"
        "c.register([{'agent_id': 'from-proc', 'signal_type': 'LOAD', 'value': 0.3}])\n"
        "print(json.dumps({'best': r.selected[0].agent_id}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": address},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"best": "proc-a"}
    assert client.agent("from-proc").signals["LOAD"].value == pytest.approx(0.3)


def test_connect_to_a_missing_namespace_is_a_typed_error(ray_session) -> None:
    with pytest.raises(NotDeployed):
        actors.connect(namespace="nobody-deployed-here")


def test_signal_buffer_batches_and_flushes_on_close(client) -> None:
    with client.buffer(max_batch=50, flush_interval_s=0.05) as buf:
        for i in range(120):
            buf.add({"agent_id": f"buf-{i}", "signal_type": "LOAD", "value": 0.5})
        buf.add({"agent_id": "buf-bad", "signal_type": "LOAD", "value": 3})
    assert buf.accepted == 120 and len(buf.rejected) == 1 and buf.dropped == 0
    assert client.agent("buf-119").history_length == 1


def test_expiry_sweep_runs_in_the_actor(client) -> None:
    """Only the sweep removes an agent: reads hide expired signals but keep the agent."""
    client.register(
        [{"agent_id": "short-lived", "signal_type": "LOAD", "value": 0.5, "ttl_s": 0.3}]
    )
    assert client.agent("short-lived").history_length == 1
    before = client.stats()["agents"]
    deadline = time.monotonic() + 15
    gone = False
    while time.monotonic() < deadline and not gone:
        time.sleep(0.25)
        try:
            client.agent("short-lived")
        except NotFound:
            gone = True
    assert gone, "the sweep never dropped the expired agent"
    stats = client.stats()
    assert stats["agents"] < before
    assert sum(s["sweeps"] for s in stats["shards"]) > 0
    assert all(s["failed_sweeps"] == 0 for s in stats["shards"])


def test_overload_pages_are_bounded_and_selections_stay_responsive(client) -> None:
    """30,000 agents with rising LOAD: the overload list comes in bounded pages that
    together cover every shard, and selections made meanwhile are never degraded (the
    shards yield between chunks instead of fitting everything in one go)."""
    import threading

    n, now = 30_000, time.time()
    ids = [f"ovl-{i}" for i in range(n)]
    for step in range(4):
        client.register_arrays(
            ids,
            ["LOAD"] * n,
            np.full(n, 0.5 + 0.1 * step),
            timestamps_s=[now - 30 + 10 * step] * n,
        )
    stop, degraded, answered = threading.Event(), [], [0]

    def select_loop() -> None:
        while not stop.is_set():
            res = client.select(candidates=ids[:50], assign=False)
            answered[0] += 1
            degraded.append(res.degraded)

    t = threading.Thread(target=select_loop)
    t.start()
    try:
        cursor, pages, seen = None, 0, 0
        while pages < 200:
            page = client.overloads(horizon_s=60, threshold=0.8, limit=2000, cursor=cursor)
            assert len(page["overloads"]) <= 2000 and not page["degraded"]
            seen += sum(p.agent_id.startswith("ovl-") for p in page["overloads"])
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        t.join()
    assert cursor is None and pages > 1 and seen == n
    assert answered[0] > 0 and not any(degraded)


def test_killed_shard_degrades_then_recovers(client, ray_session, namespace) -> None:
    """Run last in this module: the killed shard restarts empty (no checkpoints yet).

    The shard is first frozen (SIGSTOP), so it certainly misses the deadline: a kill alone
    races Ray's restart, which may answer in time."""
    client.register(
        [{"agent_id": f"kill-{i}", "signal_type": "LOAD", "value": 0.2} for i in range(60)]
    )
    victim = ray_session.get_actor(SHARD_NAME.format(index=1), namespace=namespace)
    pid = ray_session.get(victim.ping.remote())["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = client.select(k=5)
        assert time.monotonic() - t0 < client.config.shard_deadline_s * 2 + 2  # no hang
        assert res.selected  # the live shards still answer
        assert res.degraded and (res.shards_answered, res.shards_total) == (2, 3)
    finally:
        os.kill(pid, signal.SIGKILL)  # Ray restarts it
    stats = wait_until_ready(client, timeout_s=60)
    assert stats["ready"] and stats["shards_up"] == 3
    after = client.select(k=5)
    assert not after.degraded and after.shards_answered == 3


def test_a_local_router_selects_without_the_router_hop_and_is_counted_once(client) -> None:
    """What a Serve replica does: fan out itself, push its counters to every router."""
    import asyncio

    from actors.client.clients import connect_async

    local_client = connect_async(client.config.namespace)
    local = local_client.local_router()
    client.register(
        [{"agent_id": f"loc-{i}", "signal_type": "LOAD", "value": 0.1} for i in range(5)]
    )

    def selections() -> int:
        return sum(client.metrics_snapshot()["metrics"].selections_total.values())

    async def select_and_push(n: int) -> None:
        for _ in range(n):
            res = await local.select(SelectRequest(k=1, strategy="best", assign=False))
            assert res.selected and res.shards_answered == 3
        await local_client.push_metrics("test-replica", local)

    before = selections()
    asyncio.run(select_and_push(3))
    assert selections() == before + 3  # relayed by both routers, counted once
    asyncio.run(select_and_push(0))  # the same cumulative counts again
    assert selections() == before + 3
    asyncio.run(select_and_push(1))
    assert selections() == before + 4


def test_a_client_fanning_out_itself_assigns_and_is_counted_once(client) -> None:
    """``fan_out="local"``: one hop to the shards, the same answers, counters pushed."""
    from actors.client.clients import connect
    from actors.client.relay import PUSH_INTERVAL_S

    local = connect(client.config.namespace, fan_out="local")
    ids = [f"fan-{i}" for i in range(6)]
    client.register([{"agent_id": a, "signal_type": "LOAD", "value": 0.2} for a in ids])

    def selections() -> int:
        return sum(client.metrics_snapshot()["metrics"].selections_total.values())

    before = selections()
    picked = local.select(candidates=ids, k=2)  # assigning, the default
    assert len(picked.selected) == 2 and picked.shards_answered == picked.shards_total
    assert all(s.assignment_id for s in picked.selected)
    # The tasks are recorded on the owning shards, where every other router sees them.
    assert client.agent(picked.selected[0].agent_id).in_flight == 1
    assert set(local.scores(ids).scores) == set(ids)
    local.flush_metrics()
    assert selections() == before + 1
    local.flush_metrics()  # the same cumulative counts again: still counted once
    assert selections() == before + 1
    # A second later, selecting pushes by itself (not waiting for the routers' answers).
    local.relay._pushed_at -= PUSH_INTERVAL_S
    local.select(candidates=ids, k=1, assign=False)
    deadline = time.monotonic() + 10
    while selections() != before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert selections() == before + 2
    with pytest.raises(ValueError, match="fan_out"):
        connect(client.config.namespace, fan_out="sideways")  # type: ignore[arg-type]
