"""Back-pressure through real actors: a shard driven far past what it can absorb answers
every write with an acknowledgement or a retryable error, and its queue stays bounded."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import actors
from actors.client import connect_async
from actors.cluster.deployment import SHARD_NAME
from actors.core.config import ServiceConfig, ShardConfig
from actors.core.errors import Unavailable

BOUND = 20_000
BATCH = 5_000
CALLS = 40  # 200,000 signals at once: ten times the queue bound


@pytest.fixture(scope="module")
def deployed(ray_session, namespace) -> Iterator[str]:
    actors.deploy(
        ServiceConfig(
            namespace=namespace,
            num_shards=1,
            shard=ShardConfig(max_queued_signals=BOUND, sweep_interval_s=60),
            shard_deadline_s=30.0,  # the frozen second must not read as an outage
        )
    )
    yield namespace
    actors.teardown(namespace)


def test_overload_is_refused_retryably_and_nothing_is_lost(deployed, ray_session) -> None:
    """The shard is frozen (SIGSTOP) while the burst is sent, so the burst certainly
    arrives faster than it can be absorbed, then thawed to face it all at once."""
    shard = ray_session.get_actor(SHARD_NAME.format(index=0), namespace=deployed)
    pid = ray_session.get(shard.ping.remote())["pid"]

    async def drive() -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        client = connect_async(namespace=deployed)
        ids = [f"bp-{i}" for i in range(BATCH)]

        async def one(k: int) -> Any:
            try:
                return await client.register_arrays(
                    ids, ["LOAD"] * BATCH, np.full(BATCH, k / CALLS)
                )
            except Unavailable as exc:
                return exc

        os.kill(pid, signal.SIGSTOP)
        try:
            burst = asyncio.gather(*(one(k) for k in range(CALLS)))
            await asyncio.sleep(1.0)  # every call is sent and waits at the frozen shard
        finally:
            os.kill(pid, signal.SIGCONT)
        results = await burst
        return list(results), await client.stats(), await client.metrics_snapshot()

    results, stats, metrics = asyncio.run(drive())
    acked = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Unavailable)]
    assert len(acked) + len(refused) == CALLS  # every write got one answer or the other
    assert acked and refused, (len(acked), len(refused))
    assert all(r.accepted == BATCH for r in acked)
    # A refused batch names every item as not applied, so a client knows what to resend.
    assert all(len(e.details) == BATCH for e in refused)
    assert all(d["outcome"] == "not_applied" for d in refused[0].details)
    (shard,) = stats["shards"]
    assert shard["queued_signals"] == 0  # drained
    assert shard["refused_signals"] == len(refused) * BATCH
    # What was acknowledged is there: each accepted batch is one more sample per agent.
    assert metrics["metrics"].rejected_total.get("overloaded") == len(refused) * BATCH
    assert metrics["metrics"].signals_total["LOAD"] == len(acked) * BATCH
