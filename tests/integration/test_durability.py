"""Durability through real Ray: SIGKILL a shard while a client writes, then count.

Every write whose answer said "applied" must be there after the restart (``wal``, with
``fsync: always`` and ``everysec``: a killed process loses nothing written to the OS).
``snapshot`` mode keeps what the last snapshot held, and the stats show the restore."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import actors
from actors.client.clients import RippleClient, wait_until_ready
from actors.core.config import DurabilityConfig, ServiceConfig
from actors.core.errors import RippleError
from load.chaos import NUM_SHARDS, owned_ids


def deploy(namespace: str, storage: Path, **durability: object) -> RippleClient:
    config = ServiceConfig(
        namespace=namespace,
        num_shards=NUM_SHARDS,
        num_routers=1,
        shard_deadline_s=3.0,
        durability=DurabilityConfig(storage_path=str(storage), **durability),  # type: ignore[arg-type]
    )
    return actors.deploy(config)


def shard_pid(client: RippleClient, shard: int) -> int:
    return next(s["pid"] for s in client.stats()["shards"] if s["shard"] == shard)


def write_while_killing(client: RippleClient, prefix: str) -> tuple[list[str], int, float]:
    """Batches of 20 new agents, all owned by shard 0, from a thread; shard 0 is killed
    part-way. Returns the agents of every acknowledged batch, the refused batches, and
    how long the shard took from the kill to answering again."""
    acked: list[str] = []
    refused = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal refused
        batch_no = 0
        while not stop.is_set() and batch_no < 2000:
            ids = owned_ids(0, f"{prefix}{batch_no}", 20)
            batch_no += 1
            try:
                res = client.register(
                    [{"agent_id": a, "signal_type": "LOAD", "value": 0.5} for a in ids]
                )
            except RippleError:
                refused += 1
                time.sleep(0.05)
                continue
            assert res.accepted == 20
            acked.extend(ids)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)
    pid = shard_pid(client, 0)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    stats = wait_until_ready(client, timeout_s=60)
    back_s = time.monotonic() - killed_at
    time.sleep(1.0)  # writes go on after the restart
    stop.set()
    t.join(timeout=30)
    assert stats["ready"] and shard_pid(client, 0) != pid
    return acked, refused, back_s


def missing(client: RippleClient, agent_ids: list[str]) -> list[str]:
    out = []
    for i in range(0, len(agent_ids), 500):
        chunk = agent_ids[i : i + 500]
        known = client.scores(chunk).scores
        out += [a for a in chunk if not known[a].known]
    return out


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_every_acknowledged_signal_survives_a_sigkill(ray_session, storage, fsync) -> None:
    namespace = f"ripple-test-durable-{fsync}-{os.getpid()}"
    client = deploy(namespace, storage, mode="wal", fsync=fsync)
    try:
        acked, refused, back_s = write_while_killing(client, "k")
        assert len(acked) > 200  # the writer made progress before and after the kill
        assert missing(client, acked) == []
        shard = next(s for s in client.stats()["shards"] if s["shard"] == 0)
        d = shard["durability"]
        assert shard["restarted"] and d["mode"] == "wal" and d["fsync"] == fsync
        assert d["replayed_records"] >= 1 and d["restored_agents"] >= 1
        assert d["wal_bytes"] > 0 and d["restore_s"] < back_s
        print(f"{fsync}: {len(acked)} acked, {refused} refused, back in {back_s:.1f} s")
    finally:
        actors.teardown(namespace)


def test_snapshot_mode_restores_the_last_snapshot_and_counters(ray_session, storage) -> None:
    namespace = f"ripple-test-durable-snap-{os.getpid()}"
    client = deploy(namespace, storage, mode="snapshot", snapshot_interval_s=3600)
    try:
        ids = owned_ids(0, "s", 50)
        client.register([{"agent_id": a, "signal_type": "QUALITY", "value": 0.7} for a in ids])
        before = client.metrics_snapshot()["metrics"].signals_total["QUALITY"]
        shard = client.shard_handles[0]
        import ray

        ray.get(shard.checkpoint.remote())
        os.kill(shard_pid(client, 0), signal.SIGKILL)
        assert wait_until_ready(client, timeout_s=60)["ready"]
        assert missing(client, ids) == []
        # The counters came back with the snapshot; the scrape does not count them twice.
        assert client.metrics_snapshot()["metrics"].signals_total["QUALITY"] == before
    finally:
        actors.teardown(namespace)
