"""What durability costs and how fast a shard comes back (DESIGN §10).

python -m load durability [--smoke] [--json PATH] [--agents N] [--history H]

1. Ingest through the Ray client into 2 shards with durability off, ``snapshot``, ``wal`` +
   ``everysec`` and ``wal`` + ``always``: the same batches, the same concurrency, one
   wall-clock window each; only accepted signals count, refused and failed calls are
   their own columns.
2. Recovery: one shard holding ``--agents`` agents with ``--history`` LOAD samples each
   (a full history), snapshotted, then one more round of signals in the WAL; SIGKILL; the
   time from the kill until it answers again, and the restore (load + replay) it reports.
   Storage is a temporary directory on this machine's disk (``--storage`` to choose).
3. Selection (top 10 of every agent, nothing assigned) p99 with no snapshot running, and
   while snapshots are taken back to back, on that same shard.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import actors
from actors.client.clients import RippleClient, connect_async, wait_until_ready
from actors.cluster.deployment import ensure_ray
from actors.core.columns import SignalColumns, columns_from_arrays
from actors.core.config import DurabilityConfig, ServiceConfig, ShardConfig
from actors.core.errors import RippleError
from actors.core.models import NUM_DIMENSIONS
from load.common import Report, base_parser, percentiles_ms, section

BATCH = 1_000
MODES: dict[str, dict[str, Any]] = {
    "off": {"mode": "none"},
    "snapshot": {"mode": "snapshot", "snapshot_interval_s": 5.0},
    "wal everysec": {"mode": "wal", "fsync": "everysec"},
    "wal always": {"mode": "wal", "fsync": "always"},
}


def deploy(
    namespace: str, storage: Path, durability: dict[str, Any], shards: int, history: int = 100
) -> RippleClient:
    if durability["mode"] != "none":
        durability = {**durability, "storage_path": str(storage / namespace)}
    config = ServiceConfig(
        namespace=namespace,
        num_shards=shards,
        num_routers=1,
        shard_deadline_s=10.0,
        shard=ShardConfig(history_size=history, initial_capacity=1024),
        durability=DurabilityConfig(**durability),
    )
    return actors.deploy(config)


def batches(n: int, agents: int, seed: int = 0) -> list[SignalColumns]:
    rng = np.random.default_rng(seed)
    names = [f"agent-{i:07d}" for i in range(agents)]
    return [
        columns_from_arrays(
            [names[i] for i in rng.integers(0, agents, BATCH).tolist()],
            rng.integers(0, NUM_DIMENSIONS, BATCH),
            rng.random(BATCH),
        )
        for _ in range(n)
    ]


def ingest_rate(namespace: str, cols: list[SignalColumns], concurrency: int, max_s: float) -> dict:
    """Accepted signals per second over one wall-clock window; refusals counted apart."""
    client = connect_async(namespace)
    counts = {"accepted": 0, "rejected": 0, "failed_calls": 0}

    async def run() -> float:
        todo = list(range(len(cols)))
        deadline = time.perf_counter() + max_s

        async def worker() -> None:
            while todo and time.perf_counter() < deadline:
                i = todo.pop()
                try:
                    res = await client.register_columns(cols[i])
                except RippleError:
                    counts["failed_calls"] += 1
                    continue
                counts["accepted"] += res.accepted
                counts["rejected"] += len(res.rejected)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0

    seconds = asyncio.run(run())
    return {**counts, "seconds": seconds, "rate": counts["accepted"] / seconds}


def fill_history(client: RippleClient, agents: int, history: int, chunk: int = 25_000) -> int:
    """``history`` LOAD samples per agent, a second apart; returns signals sent."""
    names = [f"agent-{i:07d}" for i in range(agents)]
    rng = np.random.default_rng(2)
    t0 = time.time() - history
    sent = 0
    for h in range(history):
        for start in range(0, agents, chunk):
            ids = names[start : start + chunk]
            client.register_arrays(
                ids,
                np.zeros(len(ids), np.int64),
                rng.random(len(ids)),
                ttls_s=np.full(len(ids), 3600.0),
                timestamps_s=np.full(len(ids), t0 + h),
            )
            sent += len(ids)
    return sent


def shard_stats(client: RippleClient, shard: int = 0) -> dict[str, Any]:
    return next(s for s in client.stats()["shards"] if s["shard"] == shard)


def select_p99(client: RippleClient, max_s: float, during: threading.Event | None = None) -> dict:
    """Latency of top-10 selections (no assignment) for ``max_s``; with ``during``, only
    those that ran while it was set count."""
    out: list[float] = []
    deadline = time.perf_counter() + max_s
    while time.perf_counter() < deadline and len(out) < 100_000:
        t0 = time.perf_counter()
        client.select(k=10, strategy="best", assign=False)
        took = time.perf_counter() - t0
        if during is None or during.is_set():
            out.append(took)
    return percentiles_ms(out)


def recovery(report: Report, storage: Path, agents: int, history: int, max_s: float) -> None:
    namespace = "ripple-bench-recovery"
    client = deploy(namespace, storage, {"mode": "wal", "fsync": "everysec",
                                         "snapshot_interval_s": 3600.0}, 1, history)  # fmt: skip
    try:
        with section(f"fill one shard: {agents:,} agents x {history} LOAD samples"):
            sent = fill_history(client, agents, history)
        with section("snapshot"):
            snap = client.checkpoint()[0]
        with section("selection p99, no snapshot vs snapshots back to back"):
            quiet = select_p99(client, max_s)
            busy = threading.Event()
            stop = threading.Event()

            def snapshots() -> None:
                while not stop.is_set():
                    busy.set()
                    client.checkpoint()
                    busy.clear()
                    time.sleep(0.05)

            t = threading.Thread(target=snapshots)
            t.start()
            loud = select_p99(client, max_s, during=busy)
            stop.set()
            t.join(timeout=120)
        with section("one more round into the WAL after the last snapshot"):
            fill_history(client, agents, 1)
        with section("SIGKILL the shard; time until it answers again"):
            pid = shard_stats(client)["pid"]
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            ready = wait_until_ready(client, timeout_s=300)["ready"]
            back_s = time.monotonic() - killed
            d = shard_stats(client)["durability"]
        assert ready, "the shard did not come back"
        params = {"agents": agents, "history": history, "signals": sent}
        report.add("snapshot of the full shard", snap["seconds"], "s", params=params)
        report.add("snapshot size", snap["bytes"] / 1e6, "MB", params=params)
        report.add("kill to ready", back_s, "s", target="≤ 5 s at 100,000 agents", params=params)
        report.add("restore (load + replay) reported by the shard", d["restore_s"], "s")
        report.add("restore rate", d["restored_agents"] / d["restore_s"], "agents/s")
        report.add("WAL records replayed", d["replayed_records"], "records")
        report.add_percentiles("select top 10, no snapshot", quiet)
        report.add(
            "select top 10 p99 while snapshotting",
            loud["p99"],
            "ms",
            ceiling=quiet["p99"],
            target="≤ 2x the p99 without",
            params={"samples": loud["n"]},
        )
    finally:
        actors.teardown(namespace)


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--batches", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--storage", default=None, help="where state goes (default: a temp dir)")
    parser.add_argument("--skip-ingest", action="store_true", help="only recovery and selection")
    args = parser.parse_args(argv)
    agents, history = (5_000, 20) if args.smoke else (args.agents, args.history)
    n_batches = 200 if args.smoke else args.batches
    max_s = 1.0 if args.smoke else 20.0
    report = Report(
        "durability",
        {"agents": agents, "history": history, "batch": BATCH, "smoke": args.smoke},
    )
    ensure_ray(None)
    with tempfile.TemporaryDirectory(dir=args.storage) as tmp:
        storage = Path(tmp)
        cols = batches(n_batches, 100_000)
        rates: dict[str, dict] = {}
        for name, durability in {} if args.skip_ingest else MODES.items():
            namespace = f"ripple-bench-dur-{name.replace(' ', '-')}"
            deploy(namespace, storage, durability, 2)
            try:
                with section(f"ingest, durability {name}"):
                    ingest_rate(namespace, cols[:20], args.concurrency, max_s)  # warm-up
                    rates[name] = ingest_rate(namespace, cols, args.concurrency, max_s)
            finally:
                actors.teardown(namespace)
        off = rates["off"]["rate"] if rates else 0.0
        targets = {"wal everysec": "≥ 0.8x off", "wal always": "≥ 0.5x off"}
        for name, r in rates.items():
            report.add(
                f"ingest, {name}",
                r["rate"],
                "signals/s",
                ceiling=None if name == "off" else off,
                target=targets.get(name),
                params={k: v for k, v in r.items() if k != "rate"},
            )
        recovery(report, storage, agents, history, max_s)
    report.finish(args.json)
    return report
