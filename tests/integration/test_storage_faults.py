"""Storage faults through real Ray, on real file systems (DESIGN §10): a full disk (a 1 MiB
tmpfs) and a directory that refuses new files (``chattr +i``). Each test writes to shard
0 until the fault, goes on writing through it, lets the storage work again, then SIGKILLs
the shard: every acknowledged write must be back, every refused one absent, and the shard
must have resumed by itself within 15 s. EIO (which no kernel route here injects without
device-mapper) is covered by the fault-injecting file layer in ``tests/unit``.

Both need root (mount, chattr), as CI runs; elsewhere they are skipped with the reason."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actors
from actors.client.clients import RippleClient, wait_until_ready
from actors.core.errors import RippleError, StorageUnavailable
from load.chaos import owned_ids

from .test_durability import deploy, missing, shard_pid

RECOVERY_TARGET_S = 15.0


def _root_tool(*cmd: str) -> None:
    if os.geteuid() != 0 or shutil.which(cmd[0]) is None:
        pytest.skip(f"needs root and {cmd[0]}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"{' '.join(cmd)} is not allowed here: {proc.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    _root_tool("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk))
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


class Writer:
    """Batches of new agents owned by shard 0, each acknowledged or refused whole."""

    def __init__(self, client: RippleClient, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self.acked: list[str] = []
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.n = 0

    def batch(self) -> bool:
        ids = owned_ids(0, f"{self.prefix}{self.n}", 20)
        self.n += 1
        try:
            res = self.client.register(
                [{"agent_id": a, "signal_type": "LOAD", "value": 0.5} for a in ids]
            )
        except RippleError as exc:
            self.refused.extend(ids)
            self.errors.append(type(exc).__name__)
            return False
        assert res.accepted == 20
        self.acked.extend(ids)
        return True

    def until_acked(self, timeout_s: float) -> float:
        """Write until a batch is acknowledged; how long that took."""
        t0 = time.monotonic()
        while not self.batch():
            assert time.monotonic() - t0 < timeout_s, f"no write acknowledged in {timeout_s} s"
            time.sleep(0.25)
        return time.monotonic() - t0


def durability(client: RippleClient) -> dict[str, Any]:
    return next(s for s in client.stats()["shards"] if s["shard"] == 0)["durability"]


def killed_and_back(client: RippleClient, w: Writer) -> None:
    pid = shard_pid(client, 0)
    os.kill(pid, signal.SIGKILL)
    assert wait_until_ready(client, timeout_s=60)["ready"] and shard_pid(client, 0) != pid
    assert missing(client, w.acked) == []  # every acknowledged write survived
    assert sorted(missing(client, w.refused)) == sorted(w.refused)  # no refused one did


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_a_full_disk_refuses_writes_unapplied_and_resumes_by_itself(
    ray_session, small_disk, fsync
) -> None:
    namespace = f"ripple-test-enospc-{fsync}-{os.getpid()}"
    client = deploy(namespace, small_disk / "state", mode="wal", fsync=fsync)
    try:
        w = Writer(client, "full")
        for _ in range(5):
            assert w.batch()
        # Leave about 48 KiB: a few dozen batches' records, then ENOSPC.
        filler = small_disk / "filler"
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * max(0, free - 48 * 1024))
        while len(w.refused) < 100:
            w.batch()
            assert w.n < 2000, "the disk never filled"
        assert set(w.errors) == {"StorageUnavailable"}
        assert sorted(missing(client, w.refused)) == sorted(w.refused)  # nothing applied
        d = durability(client)
        assert not d["storage_ok"] and "No space" in (d["storage_problem"] or "")
        assert not client.stats()["ready"]
        with pytest.raises(StorageUnavailable):  # a snapshot fails cleanly, too
            import ray

            ray.get(client.shard_handles[0].checkpoint.remote())
        filler.unlink()  # space returns: writes resume with no restart
        took_s = w.until_acked(RECOVERY_TARGET_S)
        for _ in range(5):
            assert w.batch()
        deadline = time.monotonic() + RECOVERY_TARGET_S
        while not client.stats()["ready"]:
            assert time.monotonic() < deadline, durability(client)
            time.sleep(0.25)
        print(f"{fsync}: {len(w.acked)} acked, {len(w.refused)} refused, resumed in {took_s:.2f} s")
        killed_and_back(client, w)
    finally:
        actors.teardown(namespace)


def test_a_directory_that_refuses_new_files_keeps_the_log_and_retries_snapshots(
    ray_session, tmp_path
) -> None:
    namespace = f"ripple-test-immutable-{os.getpid()}"
    storage = tmp_path / "state"
    client = deploy(namespace, storage, mode="wal", fsync="always", snapshot_interval_s=3600)
    shard_dir = storage / "shard-0"
    try:
        w = Writer(client, "imm")
        for _ in range(5):
            assert w.batch()
        _root_tool("chattr", "+i", str(shard_dir))
        try:
            import ray

            with pytest.raises(StorageUnavailable):
                ray.get(client.shard_handles[0].checkpoint.remote())
            # The open segment still takes records: writes go on being acknowledged.
            for _ in range(10):
                assert w.batch()
            assert durability(client)["failed_snapshots"] >= 1
        finally:
            subprocess.run(["chattr", "-i", str(shard_dir)], check=True)
        # The snapshot that failed is retried by itself, with back-off.
        deadline = time.monotonic() + RECOVERY_TARGET_S
        while durability(client)["snapshots"] < 1 or not client.stats()["ready"]:
            assert time.monotonic() < deadline, durability(client)
            time.sleep(0.25)
        for _ in range(5):
            assert w.batch()
        assert w.refused == []
        killed_and_back(client, w)
    finally:
        subprocess.run(["chattr", "-i", str(shard_dir)], check=False)
        actors.teardown(namespace)
