"""Scaling sweep: ingest throughput and select latency as shards are added.

    python -m load.scaling --shards 1 2 4 8 --json results/scaling.json --plot results/scaling.png
    python -m load.scaling --smoke                        # CI size
    python -m load.scaling --address auto                 # against an existing cluster

For each S it deploys S fresh shards, drives ingest from C load-generator Ray tasks (each
a client sending columnar batches, 1,000 signals per shard call, straight to the owning
shards), measures select latency (100 of 1,000) from the driver under that load, and
then repeats the ingest with S null shards (same client, same batches, shards that do
nothing, and the same select loop running meanwhile): the same-run ceiling. Only accepted
signals count; each aggregate rate is over one wall-clock window.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from load.common import Report, base_parser, percentiles_ms, section

BATCH = 1_000


Window = dict[str, Any]


def aggregate_rate(windows: list[Window]) -> float:
    """Accepted signals of every generator over one wall-clock window, from the first
    generator's start to the last one's end (DESIGN §8): dividing by the longest single
    generator's duration would ignore that they did not start together."""
    span = max(w["end"] for w in windows) - min(w["start"] for w in windows)
    return sum(w["accepted"] for w in windows) / span


def _generator(
    handles: list[Any], num_shards: int, seconds: float, max_batches: int, seed: int, nice: int = 0
) -> Window:
    """Body of one load-generator task: send batches for ``seconds`` (bounded by count too).

    Each batch holds ``BATCH`` signals per shard, so every shard call carries about 1,000
    signals whatever S is (a client splitting a fixed batch S ways would measure per-call
    overhead, not the shards: that is what the batching helper is for).
    """
    from actors.client.clients import AsyncRippleClient
    from actors.core.columns import columns_from_arrays
    from actors.core.config import ServiceConfig

    if nice:
        # The load generator must not starve the system it measures on a small box; the
        # worker process stays niced afterwards, which only benchmark tasks ever use.
        os.nice(nice)
    rng = np.random.default_rng(seed)
    names = [f"gen{seed}-agent-{i}" for i in range(5_000 * num_shards)]
    size = BATCH * num_shards
    batches = [
        columns_from_arrays(
            [names[i] for i in rng.integers(0, len(names), size).tolist()],
            rng.integers(0, 6, size),
            rng.random(size),
        )
        for _ in range(20)
    ]
    client = AsyncRippleClient(handles, handles, ServiceConfig(num_shards=num_shards))

    async def run() -> Window:
        accepted, rejected, sent = 0, 0, 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal accepted, rejected, sent
            while sent < max_batches and time.perf_counter() < deadline:
                sent += 1
                res = await client.register_columns(batches[sent % len(batches)])
                accepted += res.accepted
                rejected += len(res.rejected)

        # Wall-clock times, comparable across the generator processes of one host.
        start = time.time()
        await asyncio.gather(*(worker() for _ in range(4)))
        return {"accepted": accepted, "rejected": rejected, "start": start, "end": time.time()}

    return asyncio.run(run())


def start_generators(
    handles: list[Any], generators: int, seconds: float, max_batches: int, nice: int = 0
) -> list[Any]:
    """Launch the load-generator tasks; their refs (each gives a ``Window``)."""
    import ray

    task: Any = ray.remote(num_cpus=0.1)(_generator)
    return [
        task.remote(handles, len(handles), seconds, max_batches, g, nice) for g in range(generators)
    ]


def drive(
    handles: list[Any], generators: int, seconds: float, max_batches: int, nice: int = 0
) -> float:
    import ray

    return aggregate_rate(
        ray.get(start_generators(handles, generators, seconds, max_batches, nice))
    )


def under_load(
    client: Any,
    handles: list[Any],
    sets: list[list[str]],
    generators: int,
    seconds: float,
    nice: int,
) -> tuple[float, list[float]]:
    """Ingest into ``handles`` while the driver selects on ``client``'s shards: a measured
    run and its ceiling carry the same select loop (like for like)."""
    import ray

    refs = start_generators(handles, generators, seconds, 10**6, nice)
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(lat) < 5_000:
        t0 = time.perf_counter()
        client.select(candidates=sets[len(lat) % 16], k=1, assign=False)
        lat.append(time.perf_counter() - t0)
    return aggregate_rate(ray.get(refs)), lat


def sweep(
    report: Report,
    shard_counts: list[int],
    generators: int,
    seconds: float,
    smoke: bool,
    nice: int = 0,
) -> list[dict[str, Any]]:
    import ray

    import actors
    from actors.core.config import ServiceConfig, ShardConfig
    from load.null_shard import NullShard

    rows = []
    for s in shard_counts:
        ns = f"ripple-scaling-{s}"
        with section(f"S = {s}"):
            actors.teardown(ns)
            client = actors.deploy(
                ServiceConfig(
                    namespace=ns,
                    num_shards=s,
                    shard_num_cpus=0.1,
                    shard=ShardConfig(sweep_interval_s=60),
                )
            )
            ids = [f"sel-{i}" for i in range(1000)]
            client.register_arrays(ids, np.zeros(1000, int), np.random.default_rng(s).random(1000))
            rng = np.random.default_rng(0)
            sets = [[ids[j] for j in rng.choice(1000, 100, replace=False)] for _ in range(16)]
            throughput, lat = under_load(
                client, client.shard_handles, sets, generators, seconds, nice
            )
            null_cls: Any = ray.remote(NullShard)
            nulls = [
                null_cls.options(num_cpus=0.1, scheduling_strategy="SPREAD").remote(i)
                for i in range(s)
            ]
            ray.get([n.ping.remote() for n in nulls])
            ceiling, _ = under_load(client, nulls, sets, generators, seconds, nice)
            for n in nulls:
                ray.kill(n)
            actors.teardown(ns)
        p = percentiles_ms(lat)
        rows.append(
            {
                "shards": s,
                "throughput": throughput,
                "ceiling": ceiling,
                **{k: p[k] for k in ("p50", "p95", "p99")},
            }
        )
        report.add(
            f"ingest, S={s}",
            throughput,
            "signals/s",
            ceiling=ceiling,
            target="≥ 0.7 of ceiling",
            params={"shards": s, "generators": generators},
        )
        report.add(
            f"select 100 of 1,000 under load, S={s}, p95",
            p["p95"],
            "ms",
            target="≤ 10 ms",
            params={"p50": p["p50"], "p99": p["p99"], "samples": p["n"]},
        )
    base = rows[0]["throughput"] / rows[0]["shards"]
    for r in rows:
        r["efficiency"] = r["throughput"] / (r["shards"] * base)
        report.add(f"scaling efficiency, S={r['shards']}", r["efficiency"], "ratio")
    return rows


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [r["shards"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(s, [r["throughput"] for r in rows], "o-", label="Ripple shards")
    a.plot(s, [r["ceiling"] for r in rows], "s--", label="null shards (same run)")
    a.plot(s, [rows[0]["throughput"] * x / rows[0]["shards"] for x in s], ":", label="ideal linear")
    a.set_xlabel("shards")
    a.set_ylabel("signals/s")
    a.set_title("Ingest throughput")
    a.legend()
    b.plot(s, [r["p50"] for r in rows], "o-", label="p50")
    b.plot(s, [r["p95"] for r in rows], "o-", label="p95")
    b.plot(s, [r["p99"] for r in rows], "o-", label="p99")
    b.set_xlabel("shards")
    b.set_ylabel("ms")
    b.set_title("Select 100 of 1,000 under ingest load")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--address", default=None)
    parser.add_argument("--plot", metavar="PNG")
    parser.add_argument(
        "--nice", type=int, default=0, help="run load generators at this nice level (0-19)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.shards, args.seconds = [1, 2], 2.0
    from actors.cluster.deployment import ensure_ray

    ensure_ray(args.address)
    report = Report(
        "scaling sweep",
        {
            "shards": args.shards,
            "generators": args.generators,
            "seconds": args.seconds,
            "nice": args.nice,
            "batch": BATCH,
            "smoke": args.smoke,
        },
    )
    rows = sweep(report, args.shards, args.generators, args.seconds, args.smoke, args.nice)
    report.params["rows"] = rows
    if args.plot:
        plot(rows, args.plot)
    report.finish(args.json)
    return report


if __name__ == "__main__":
    main()
