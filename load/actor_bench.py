"""Ray actor benchmark: client ingest against real and null shards, select latency, memory.

    python -m load.actor_bench --smoke     # CI size, ~30 s
    python -m load.actor_bench --json results/actors.json

Each ingest figure sits beside the same run's null-shard ceiling: actors that accept the
same columnar batches through the same client and do nothing with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import numpy as np

import actors
from actors.client.clients import AsyncRippleClient, RippleClient, connect
from actors.cluster.adapter import Fanout, RayTransport
from actors.cluster.deployment import ensure_ray
from actors.core.columns import columns_from_arrays
from actors.core.config import ServiceConfig, ShardConfig
from actors.core.models import NUM_DIMENSIONS, SelectRequest
from load.common import Report, base_parser, percentiles_ms, section, time_calls

BATCH = 1_000
NAMESPACE = "ripple-bench"


def null_client(num_shards: int, namespace: str) -> AsyncRippleClient:
    import ray

    from load.null_shard import NullShard

    cls: Any = ray.remote(NullShard)
    shards = [
        cls.options(
            name=f"null-{i}",
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0.25,
            scheduling_strategy="SPREAD",
        ).remote(i)
        for i in range(num_shards)
    ]
    ray.get([s.ping.remote() for s in shards])
    return AsyncRippleClient(
        shards, shards, ServiceConfig(num_shards=num_shards, namespace=namespace)
    )


class NullRouter:
    """The selection floor: client -> router -> every shard in parallel, doing nothing."""

    def __init__(self, shards: list[Any]) -> None:
        self.shards = shards

    async def select(self) -> int:
        return len(await asyncio.gather(*(s.ping.remote() for s in self.shards)))


def null_fanout(num_shards: int) -> Any:
    import ray

    from load.null_shard import NullShard

    shard_cls: Any = ray.remote(NullShard)
    router_cls: Any = ray.remote(NullRouter)
    shards = [shard_cls.options(num_cpus=0.1).remote(i) for i in range(num_shards)]
    router = router_cls.options(num_cpus=0.1).remote(shards)
    ray.get(router.select.remote())
    return router


def make_columns(n_agents: int, batches: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    names = [f"agent-{i:07d}" for i in range(n_agents)]
    out = []
    for _ in range(batches):
        idx = rng.integers(0, n_agents, BATCH)
        out.append(
            columns_from_arrays(
                [names[i] for i in idx.tolist()],
                rng.integers(0, NUM_DIMENSIONS, BATCH),
                rng.random(BATCH),
            )
        )
    return out


async def drive_ingest(
    client: AsyncRippleClient, batches: list[Any], concurrency: int, max_s: float
) -> float:
    """Accepted signals/s with ``concurrency`` batches in flight, bounded by count and
    time. Rejected items are not ingested and do not count (DESIGN §8); the generated
    batches are all valid, so any rejection shows up as a lower rate."""
    deadline = time.perf_counter() + max_s
    todo = list(range(len(batches)))
    done = 0

    async def worker() -> None:
        nonlocal done
        while todo and time.perf_counter() < deadline:
            i = todo.pop()
            res = await client.register_columns(batches[i])
            done += res.accepted

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - t0)


def populate_columnar(client: RippleClient, n_agents: int, chunk: int = 20_000) -> None:
    names = [f"agent-{i:07d}" for i in range(n_agents)]
    rng = np.random.default_rng(1)
    for start in range(0, n_agents, chunk):
        ids = names[start : start + chunk]
        for code in range(NUM_DIMENSIONS - 1):
            client.register_arrays(ids, np.full(len(ids), code), rng.random(len(ids)))


def bench_select(report: Report, client: RippleClient, smoke: bool, max_s: float) -> None:
    import ray

    from load.null_shard import NullShard

    with section("select 100 of 1,000 through the client"):
        ids = [f"sel-{i}" for i in range(1000)]
        client.register_arrays(ids, np.zeros(1000, int), np.random.default_rng(2).random(1000))
        rng = np.random.default_rng(3)
        sets = [[ids[i] for i in rng.choice(1000, 100, replace=False)] for _ in range(32)]
        it = iter(range(10**9))
        lat = percentiles_ms(
            time_calls(
                lambda: client.select(candidates=sets[next(it) % 32], k=1, assign=False),
                count=300 if smoke else 2000,
                max_s=max_s,
            )
        )
        # Floor: the same two hops with no work: a null router fanning out to null shards.
        null_router = null_fanout(len(client.shard_handles))
        floor = percentiles_ms(
            time_calls(lambda: ray.get(null_router.select.remote()), count=300, max_s=max_s)
        )
        ray.kill(null_router)
        report.add_percentiles(
            "select 100 of 1,000 via client", lat, floor_ms=floor, p95_target="p95 ≤ 3 ms"
        )

    with section("select 100 of 1,000, the client fanning out itself (fan_out='local')"):
        local = connect(client.config.namespace, fan_out="local")
        lat = percentiles_ms(
            time_calls(
                lambda: local.select(candidates=sets[next(it) % 32], k=1, assign=False),
                count=300 if smoke else 2000,
                max_s=max_s,
            )
        )
        # Floor: the same one hop with no work, through the same fan-out code.
        shard_cls: Any = ray.remote(NullShard)
        n = len(client.shard_handles)
        shards = [shard_cls.options(num_cpus=0.1).remote(i) for i in range(n)]
        fanout = Fanout(RayTransport(shards), deadline_s=5.0)
        floor = percentiles_ms(
            time_calls(
                lambda: fanout.gather_sync({s: ("ping", ()) for s in range(len(shards))}),
                count=300,
                max_s=max_s,
            )
        )
        for shard in shards:
            ray.kill(shard)
        report.add_percentiles(
            "select 100 of 1,000 via client, fan_out='local'",
            lat,
            floor_ms=floor,
            p95_target="p95 ≤ 3 ms",
        )


def bench_top10(report: Report, client: RippleClient, smoke: bool, max_s: float) -> None:
    import ray

    n_agents = 20_000 if smoke else 1_000_000
    with section(f"top-10 of {n_agents:,} agents over 2 shards"):
        populate_columnar(client, n_agents)
        req = SelectRequest(k=10, assign=False)
        lat = percentiles_ms(
            time_calls(lambda: client.select_request(req), count=20 if smoke else 200, max_s=max_s)
        )
        report.add_percentiles(
            f"top-10 of {n_agents:,} agents, 2 shards",
            lat,
            p95_target=None if smoke else "p95 ≤ 30 ms",
        )
        pings = ray.get([h.ping.remote() for h in client.shard_handles])
        stats = client.stats()
        report.add(
            f"shard memory (RSS, both shards) with {stats['agents']:,} agents",
            sum(p["rss_bytes"] for p in pings) / 2**20,
            "MiB",
            params={
                "array_bytes": sum(s["array_bytes"] for s in stats["shards"]),
                "agents": stats["agents"],
            },
        )


def main(argv: list[str] | None = None) -> Report:
    p = base_parser(__doc__ or "")
    p.add_argument("--address", help="Ray address to join (default: embedded local Ray)")
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args(argv)
    smoke = args.smoke
    ensure_ray(args.address)
    report = Report(
        "actors (Ray client -> shards)",
        {"smoke": smoke, "batch": BATCH, "concurrency": args.concurrency},
    )
    batches = make_columns(10_000, 60 if smoke else 400)
    max_s = 3.0 if smoke else 15.0
    try:
        for shards in (1, 2):
            ns = f"{NAMESPACE}-{shards}"
            with section(f"ingest, {shards} shard(s)"):
                actors.teardown(ns)
                actors.teardown(ns + "-null")
                real = actors.deploy(
                    ServiceConfig(
                        namespace=ns, num_shards=shards, shard=ShardConfig(sweep_interval_s=60)
                    )
                )
                areal = AsyncRippleClient(real.router_handles, real.shard_handles, real.config)
                null = null_client(shards, ns + "-null")
                ceiling = asyncio.run(drive_ingest(null, batches, args.concurrency, max_s))
                value = asyncio.run(drive_ingest(areal, batches, args.concurrency, max_s))
                target = "≥ 300,000/s and ≥ 50% of ceiling" if shards == 2 else None
                report.add(
                    f"client ingest, {shards} shard(s), batches of {BATCH}",
                    value,
                    "signals/s",
                    ceiling=ceiling,
                    target=target,
                    params={"shards": shards},
                )
            if shards == 2:
                bench_select(report, real, smoke, max_s)
                bench_top10(report, real, smoke, max_s)
    finally:
        for shards in (1, 2):
            actors.teardown(f"{NAMESPACE}-{shards}")
            _kill_null(f"{NAMESPACE}-{shards}-null", shards)
    report.finish(args.json)
    return report


def _kill_null(namespace: str, shards: int) -> None:
    import ray

    for i in range(shards):
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(f"null-{i}", namespace=namespace))


if __name__ == "__main__":
    main()
