"""Chaos: SIGKILL shards at random while clients write, then count what survived.

python -m load chaos [--smoke] [--json PATH] [--kills N] [--modes ...]

For each durability mode, on 2 shards: two writer threads send batches of 20 new agents
(each batch owned by one shard, so an answer covers all of it); a killer SIGKILLs a random
shard every 1-3 s (after the previous one is back), up to ``--kills`` times. Counted per
mode: signals acknowledged, found afterwards, lost (acknowledged but not found), the
recovery time of each kill (SIGKILL until the shard answers again with a new pid), and
error answers (refused or failed calls, which the writer does not count as acknowledged).
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import actors
from actors.client.clients import RippleClient, wait_until_ready
from actors.cluster.deployment import ensure_ray
from actors.core.config import DurabilityConfig, ServiceConfig
from actors.core.errors import RippleError
from actors.core.partition import shard_of
from load.common import Report, base_parser, section

NUM_SHARDS = 2
MODES: dict[str, dict[str, Any]] = {
    "wal always": {"mode": "wal", "fsync": "always"},
    "wal everysec": {"mode": "wal", "fsync": "everysec"},
    "snapshot (5 s)": {"mode": "snapshot", "snapshot_interval_s": 5.0},
    "none": {"mode": "none"},
}


def owned_ids(shard: int, prefix: str, n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        a = f"{prefix}-{i}"
        if shard_of(a, NUM_SHARDS) == shard:
            out.append(a)
        i += 1
    return out


def pids(client: RippleClient) -> dict[int, int]:
    return {s["shard"]: s["pid"] for s in client.stats()["shards"] if s.get("up")}


def run_mode(name: str, durability: dict[str, Any], storage: Path, kills: int) -> dict[str, Any]:
    namespace = f"ripple-chaos-{name.split()[0]}-{os.getpid()}"
    if durability["mode"] != "none":
        durability = {**durability, "storage_path": str(storage / namespace)}
    client = actors.deploy(
        ServiceConfig(
            namespace=namespace,
            num_shards=NUM_SHARDS,
            num_routers=1,
            shard_deadline_s=2.0,
            durability=DurabilityConfig(**durability),
        )
    )
    acked: list[str] = []
    errors = 0
    lock = threading.Lock()
    stop = threading.Event()
    rng = random.Random(7)

    def writer(w: int) -> None:
        nonlocal errors
        batch = 0
        while not stop.is_set() and batch < 100_000:
            ids = owned_ids(batch % NUM_SHARDS, f"w{w}b{batch}", 20)
            batch += 1
            signals = [{"agent_id": a, "signal_type": "LOAD", "value": 0.5} for a in ids]
            try:
                res = client.register(signals)
            except RippleError:
                with lock:
                    errors += 1
                time.sleep(0.02)
                continue
            if res.accepted == len(ids):
                with lock:
                    acked.extend(ids)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    recoveries: list[float] = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(1.0, 3.0))
            before = pids(client)
            shard = rng.choice(sorted(before))
            killed_at = time.monotonic()
            os.kill(before[shard], signal.SIGKILL)
            deadline = killed_at + 120
            while time.monotonic() < deadline:
                try:
                    now = pids(client)
                except RippleError:
                    now = {}
                if shard in now and now[shard] != before[shard]:
                    recoveries.append(time.monotonic() - killed_at)
                    break
                time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    try:
        assert wait_until_ready(client, timeout_s=120)["ready"]
        found = 0
        lost: list[str] = []
        for i in range(0, len(acked), 1000):
            chunk = acked[i : i + 1000]
            known = client.scores(chunk).scores
            ok = [a for a in chunk if known[a].known]
            found += len(ok)
            lost += [a for a in chunk if not known[a].known]
    finally:
        actors.teardown(namespace)
    rec = np.array(recoveries) if recoveries else np.array([np.nan])
    return {
        "kills": len(recoveries),
        "acknowledged": len(acked),
        "found": found,
        "lost": len(lost),
        "error_answers": errors,
        "recovery_p50_s": float(np.nanmedian(rec)),
        "recovery_max_s": float(np.nanmax(rec)),
    }


def main(argv: list[str] | None = None) -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--storage", default=None, help="where state goes (default: a temp dir)")
    args = parser.parse_args(argv)
    kills = 2 if args.smoke else args.kills
    modes = ["wal always"] if args.smoke else args.modes
    report = Report("chaos", {"kills_per_mode": kills, "shards": NUM_SHARDS, "smoke": args.smoke})
    ensure_ray(None)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.storage) as tmp:
        for name in modes:
            with section(f"{name}: {kills} kills"):
                results[name] = r = run_mode(name, MODES[name], Path(tmp), kills)
            target = "0 (wal always, ≥ 20 kills)" if name == "wal always" else None
            report.add(f"{name}: acknowledged signals", r["acknowledged"], "signals")
            report.add(f"{name}: lost", r["lost"], "signals", target=target)
            report.add(f"{name}: error answers", r["error_answers"], "calls")
            report.add(f"{name}: kill to ready, median", r["recovery_p50_s"], "s")
            report.add(f"{name}: kill to ready, max", r["recovery_max_s"], "s")
            report.add(f"{name}: kills", r["kills"], "kills")
    report.finish(args.json, {"modes": results})
    return report
