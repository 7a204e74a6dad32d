"""Chaos: SIGKILL shards at random while clients write, then count what survived.

python -m load chaos [--smoke] [--json PATH] [--kills N] [--modes ...] [--disk-full-s S]

For each durability mode, on 2 shards: two writer threads send batches of 20 new agents
(each batch owned by one shard, so an answer covers all of it); a killer SIGKILLs a random
shard every 1-3 s (after the previous one is back), up to ``--kills`` times. Counted per
mode: signals acknowledged, found afterwards, lost (acknowledged but not found), the
recovery time of each kill (SIGKILL until the shard answers again with a new pid), and
error answers (refused or failed calls, which the writer does not count as acknowledged).

With ``--disk-full-s S`` (root only: it mounts a tmpfs), each WAL mode runs once more with
its state on a small tmpfs that is filled for S seconds in the middle of the run, then
freed, while the kills go on: acknowledged writes must all survive, writes refused for
the storage (503 ``storage_unavailable``) must all be absent, and the time from the space
coming back to each shard's next acknowledged write is reported.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
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
from actors.core.errors import RippleError, StorageUnavailable
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


class SmallDisk:
    """A tmpfs of our own for the state, filled and freed on demand (needs root)."""

    def __init__(self, root: Path, size: str = "256m") -> None:
        self.path = root / "disk"
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        self.filler = self.path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:  # smaller and smaller writes until not a byte more fits
            for size in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


def can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here (None: it can)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root and mount"
    return None


def run_mode(
    name: str,
    durability: dict[str, Any],
    storage: Path,
    kills: int,
    disk_full_s: float | None = None,
) -> dict[str, Any]:
    namespace = f"ripple-chaos-{name.split()[0]}-{os.getpid()}"
    disk = SmallDisk(storage / f"{namespace}-{time.monotonic_ns()}") if disk_full_s else None
    if disk is not None:
        storage = disk.path
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
    refused: list[str] = []  # refused for the storage: must never be applied
    acked_at: dict[int, list[float]] = {s: [] for s in range(NUM_SHARDS)}
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
            except RippleError as exc:
                with lock:
                    errors += 1
                    if isinstance(exc, StorageUnavailable):
                        refused.extend(ids)
                time.sleep(0.02)
                continue
            if res.accepted == len(ids):
                with lock:
                    acked.extend(ids)
                    acked_at[(batch - 1) % NUM_SHARDS].append(time.monotonic())

    fault: dict[str, float] = {}

    def fill_then_free() -> None:
        assert disk is not None and disk_full_s is not None
        time.sleep(1.5)
        try:
            disk.fill()
            fault["full_at"] = time.monotonic()
            stop.wait(disk_full_s)
        finally:  # whatever happened, the space comes back and the run can end
            disk.free()
            fault["freed_at"] = time.monotonic()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    if disk is not None:
        threads.append(threading.Thread(target=fill_then_free))
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
        if disk is not None:  # the run goes on until a while after the space came back
            while "freed_at" not in fault and any(t.is_alive() for t in threads):
                time.sleep(0.1)
            time.sleep(2.0)
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
        applied_refused = 0
        for i in range(0, len(refused), 1000):
            chunk = refused[i : i + 1000]
            known = client.scores(chunk).scores
            applied_refused += sum(known[a].known for a in chunk)
    finally:
        actors.teardown(namespace)
        if disk is not None:
            disk.close()
    rec = np.array(recoveries) if recoveries else np.array([np.nan])
    resumed = [
        min((t for t in times if t >= fault["freed_at"]), default=np.nan) - fault["freed_at"]
        for times in acked_at.values()
        if "freed_at" in fault
    ]
    return {
        "refused_for_storage": len(refused),
        "refused_but_applied": applied_refused,
        "resumed_after_space_s": float(np.nanmax(resumed)) if resumed else None,
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
    parser.add_argument(
        "--disk-full-s",
        type=float,
        default=4.0,
        help="also run each WAL mode with its disk full this long mid-run (0: not)",
    )
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
        full_s = (2.0 if args.smoke else args.disk_full_s) or None
        why_not = can_mount()
        for name in [m for m in modes if MODES[m]["mode"] == "wal"] if full_s else []:
            if why_not is not None:
                report.add(f"{name} + disk full: skipped ({why_not})", 0, "runs")
                continue
            key = f"{name} + disk full {full_s:g} s"
            with section(f"{key}: {kills} kills"):
                results[key] = r = run_mode(name, MODES[name], Path(tmp), kills, full_s)
            report.add(f"{key}: acknowledged signals", r["acknowledged"], "signals")
            report.add(f"{key}: lost", r["lost"], "signals", target="0")
            report.add(f"{key}: refused for the storage", r["refused_for_storage"], "signals")
            report.add(
                f"{key}: refused but applied", r["refused_but_applied"], "signals", target="0"
            )
            resumed = r["resumed_after_space_s"]
            report.add(
                f"{key}: space back to acknowledged, slowest shard", resumed, "s", target="≤ 15"
            )
            report.add(f"{key}: kills", r["kills"], "kills")
    report.finish(args.json, {"modes": results})
    return report
