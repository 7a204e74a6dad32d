"""A shard's durability when the storage fails, without Ray: a fault-injecting file layer
(``FileOps``) gives EIO on a write, an ftruncate, an fsync or an open; snapshots are
damaged byte by byte. Each test writes, has some writes refused, "kills" the shard (its
descriptors closed unsynced, nothing flushed: what a SIGKILL leaves) and restores.
Every acknowledged write must be back, every refused one absent."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import random
from pathlib import Path
from typing import Any

import pytest

from actors.cluster.durability import ShardDurability
from actors.cluster.wal_writer import FileOps
from actors.core import persistence, recovery, wal
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.errors import InvalidInput, StorageUnavailable
from actors.core.state import ShardState

from .helpers import sig

NOW = 1_800_000_000.0


class Faulty(FileOps):
    """Fails the named calls with EIO; ``partial``: a write first writes half its bytes."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.partial = False
        self.calls: dict[str, int] = {}

    def _check(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        if call in self.failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    def open(self, *a: Any) -> int:  # type: ignore[override]
        self._check("open")
        return os.open(*a)

    def write(self, fd: int, data: Any) -> int:  # type: ignore[override]
        if "write" in self.failing and self.partial:
            self.partial = False
            return os.write(fd, bytes(data)[: max(1, len(data) // 2)])
        self._check("write")
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self._check("fsync")
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:  # type: ignore[override]
        self._check("ftruncate")
        os.ftruncate(fd, size)


def start(tmp_path: Path, fsync: str = "always", **kw: Any) -> tuple[ShardDurability, ShardState]:
    cfg = DurabilityConfig(mode="wal", fsync=fsync, storage_path=str(tmp_path), **kw)
    d = ShardDurability(cfg, 0, "test")
    return d, d.restore(ShardConfig(), clock=lambda: NOW)


def start_faulty(
    tmp_path: Path, fsync: str = "always", **kw: Any
) -> tuple[ShardDurability, ShardState, Faulty]:
    """``start`` with the log's system calls going through a ``Faulty`` layer."""
    d, state = start(tmp_path, fsync, **kw)
    assert d.wal is not None
    d.wal.ops = faulty = Faulty()
    return d, state, faulty


def kill(d: ShardDurability) -> None:
    """What a SIGKILL leaves: descriptors closed by the kernel, nothing fsynced or closed
    in order, the lock released."""
    assert d.wal is not None
    for fd in [*d.wal._retired, d.wal.fd, d.wal._lock_fd]:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    d.snaps.close(wait=False)


def write(state: ShardState, d: ShardDurability, agent: str) -> bool:
    """One ingest as the shard actor runs it: apply (logged first), then the commit.
    True when acknowledged."""
    try:
        res = state.ingest_dicts([sig(agent, "LOAD", 0.5)])
        assert res.accepted == 1
        asyncio.run(d.commit())
    except StorageUnavailable:
        return False
    return True


class Holder:
    """The host's reference to the state, as the shard actor keeps it (``adopt``)."""

    def __init__(self, d: ShardDurability, state: ShardState) -> None:
        self.state = state
        d.adopt = self.set

    def set(self, state: ShardState) -> None:
        self.state = state


def test_a_failed_append_applies_nothing_and_leaves_no_partial_record(tmp_path) -> None:
    d, state, faulty = start_faulty(tmp_path)
    assert d.wal is not None
    assert write(state, d, "before")
    faulty.failing, faulty.partial = {"write"}, True  # half a record reaches the file
    assert not write(state, d, "refused-1") and not write(state, d, "refused-2")
    assert "refused-1" not in state and "refused-2" not in state  # not applied
    assert d.problem and not d.storage_ok and d.wal.failed_appends == 2
    assert state.metrics.storage_failures_total == {"append": 2}
    size_after_fault = d.wal.segment_bytes
    assert (d.wal.dir / f"wal-{d.wal.seq:012d}.log").stat().st_size == size_after_fault
    faulty.failing = set()  # the storage works again: writes resume by themselves
    assert write(state, d, "after")
    assert d.storage_ok
    kill(d)
    d2, back = start(tmp_path)
    assert "before" in back and "after" in back
    assert "refused-1" not in back and "refused-2" not in back
    assert d2.report.dropped_tails == [] and d2.report.damaged_segments == []


def test_when_even_the_truncate_fails_the_log_moves_to_a_fresh_segment(tmp_path) -> None:
    d, state, faulty = start_faulty(tmp_path)
    assert d.wal is not None
    first_seq = d.wal.seq
    faulty.failing, faulty.partial = {"write", "ftruncate"}, True
    assert not write(state, d, "refused")
    assert d.wal.broken  # a partial record may sit at its end: no record goes behind it
    faulty.failing = set()
    assert write(state, d, "after")
    assert d.wal.seq == first_seq + 1  # a fresh segment, with its header
    kill(d)
    d2, back = start(tmp_path)
    assert "after" in back and "refused" not in back
    assert d2.report.damaged_segments == []  # the partial record is a tail, nothing behind it


def test_a_failed_fsync_with_always_takes_the_writes_back(tmp_path) -> None:
    d, state, faulty = start_faulty(tmp_path)
    holder = Holder(d, state)
    assert d.wal is not None
    assert write(holder.state, d, "acked")
    faulty.failing = {"fsync"}
    assert not write(holder.state, d, "refused")
    # The state was rebuilt from the disk, without the refused write.
    assert holder.state is not state and "refused" not in holder.state
    assert "acked" in holder.state and d.rebuilds == 1
    assert holder.state.metrics.storage_failures_total == {"fsync": 1}
    assert not write(holder.state, d, "refused-too")  # still failing
    faulty.failing = set()
    assert write(holder.state, d, "after")
    assert d.storage_ok
    kill(d)
    _, back = start(tmp_path)
    assert {"acked", "after"} <= set(back.agent_ids())
    assert "refused" not in back and "refused-too" not in back


def test_a_failed_fsync_with_everysec_keeps_what_was_acknowledged(tmp_path) -> None:
    d, state, faulty = start_faulty(tmp_path, fsync="everysec", snapshot_interval_s=3600)
    assert d.wal is not None
    assert write(state, d, "acked")  # acknowledged once written (everysec)
    faulty.failing = {"fsync"}
    with pytest.raises(StorageUnavailable):
        asyncio.run(d.wal.durable())
    assert d.snapshot_owed and d.wal.broken and "acked" in state
    faulty.failing = set()

    async def one_round() -> None:  # the background loop, until it owes nothing
        task = asyncio.ensure_future(d.run(lambda: state))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not d.snapshot_owed and d.storage_ok:
                break
        task.cancel()

    asyncio.run(one_round())
    assert not d.snapshot_owed and d.snaps.taken == 1 and d.storage_ok
    kill(d)
    _, back = start(tmp_path, "everysec")
    assert "acked" in back


def test_a_refused_open_during_a_snapshot_keeps_the_log_where_it_was(tmp_path) -> None:
    d, state, faulty = start_faulty(tmp_path)
    assert d.wal is not None
    assert write(state, d, "a")
    fd, seq = d.wal.fd, d.wal.seq
    faulty.failing = {"open"}
    with pytest.raises(StorageUnavailable):
        asyncio.run(d.snapshot(state))
    assert (d.wal.fd, d.wal.seq) == (fd, seq) and d.snapshot_owed
    assert write(state, d, "b")  # the current segment is still open and used
    faulty.failing = set()
    asyncio.run(d.snapshot(state))
    assert write(state, d, "c")
    kill(d)
    _, back = start(tmp_path)
    assert {"a", "b", "c"} <= set(back.agent_ids())


def snapshot_bytes() -> bytes:
    state = ShardState(ShardConfig(), clock=lambda: NOW)
    state.ingest_dicts([sig(f"a{i}", "LOAD", i / 20) for i in range(20)])
    state.describe("a1", max_concurrency=3, labels={"tier": "gold"})
    return recovery.snapshot(state)


def test_random_damage_to_a_snapshot_is_always_the_projects_error() -> None:
    data = snapshot_bytes()
    rng = random.Random(20261201)
    outcomes: dict[str, int] = {}
    for i in range(200):
        bad = bytearray(data)
        if i % 4 == 3:
            bad = bad[: rng.randrange(len(bad))]
        else:
            for _ in range(rng.randint(1, 3)):
                bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        try:
            recovery.restore(bytes(bad), ShardConfig(), clock=lambda: NOW)
            outcomes["restored"] = outcomes.get("restored", 0) + 1
        except InvalidInput:
            outcomes["invalid"] = outcomes.get("invalid", 0) + 1
    # Anything else would have raised out of the loop; most damage must be detected.
    assert outcomes.get("invalid", 0) >= 190, outcomes
    for empty in (b"", b"PK", b"\x00" * 100):
        with pytest.raises(InvalidInput):
            recovery.restore(empty)
    with pytest.raises(InvalidInput):
        persistence.verify(data[:-10])
    persistence.verify(io.BytesIO(data))  # from a file, read in pieces
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x01
    with pytest.raises(InvalidInput):
        persistence.verify(io.BytesIO(bytes(flipped)))


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before_plus_its_wal(tmp_path) -> None:
    d, state = start(tmp_path, keep_snapshots=2)
    acked = []
    for i in range(3):
        assert write(state, d, f"a{i}")
        acked.append(f"a{i}")
        asyncio.run(d.snapshot(state))
    assert write(state, d, "last")
    acked.append("last")
    kill(d)
    newest = sorted(p for p in (tmp_path / "shard-0").glob("snap-*.npz"))[-1]
    raw = bytearray(newest.read_bytes())
    raw[_inside_largest_member(bytes(raw))] ^= 0x10  # a flip in data, not in a header
    newest.write_bytes(bytes(raw))
    d2, back = start(tmp_path)
    assert set(acked) <= set(back.agent_ids())
    assert [s["snapshot"] for s in d2.report.skipped_snapshots] == [newest.name]
    assert (tmp_path / "shard-0" / "quarantine" / newest.name).exists()


def test_a_corrupt_record_mid_wal_costs_that_record_only_and_is_kept_aside(tmp_path) -> None:
    d, state = start(tmp_path)
    for i in range(10):
        assert write(state, d, f"a{i}")
    assert d.wal is not None
    path = d.wal.dir / f"wal-{d.wal.seq:012d}.log"
    kill(d)
    data = bytearray(path.read_bytes())
    records = wal.decode(bytes(data)).records
    assert len(records) == 10
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    d2, back = start(tmp_path)
    assert len(back) == 9  # one record lost, the nine around it replayed
    [damage] = d2.report.damaged_segments
    assert damage["segment"] == path.name and damage["records_kept"] == 9
    [[start_b, end_b]] = damage["lost_bytes"]
    assert start_b < len(data) // 2 < end_b < len(data)
    assert Path(damage["kept_aside"]).read_bytes() == bytes(data)
    # The next snapshot may prune the segment; the copy aside stays.
    asyncio.run(d2.snapshot(back))
    asyncio.run(d2.snapshot(back))
    assert not path.exists() and Path(damage["kept_aside"]).exists()


def test_a_shard_restarted_while_the_disk_refuses_files_starts_and_catches_up(tmp_path) -> None:
    """A restart during the fault must not fail the actor's constructor (Ray would not
    restart it again): it starts, refuses writes, and takes them once the disk works."""
    d, state = start(tmp_path)
    assert write(state, d, "before")
    kill(d)
    cfg = DurabilityConfig(mode="wal", fsync="always", storage_path=str(tmp_path))
    d2 = ShardDurability(cfg, 0, "test")
    assert d2.wal is not None
    faulty = Faulty()
    d2.wal.ops = faulty
    faulty.failing = {"open"}
    back = d2.restore(ShardConfig(), clock=lambda: NOW)
    assert "before" in back and not d2.storage_ok
    assert not write(back, d2, "refused")
    faulty.failing = set()
    assert write(back, d2, "after")
    segments = [s for s, _ in d2.wal.segments()]
    assert segments == sorted(set(segments))  # no segment was truncated or reused
    kill(d2)
    _, again = start(tmp_path)
    assert {"before", "after"} <= set(again.agent_ids()) and "refused" not in again


def test_a_storage_refusal_is_a_503_naming_storage_with_retry_after() -> None:
    import json

    from serve.errors import error_response

    err = StorageUnavailable(
        "the change could not be made durable and was not applied; retry later",
        [{"field": "storage", "reason": "append to the WAL: No space left on device"}],
    )
    r = error_response(err, "rid-1")
    body = json.loads(bytes(r.body))
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert body["error"]["code"] == "storage_unavailable"
    assert body["error"]["details"][0]["field"] == "storage" and body["error"]["request_id"]


def _inside_largest_member(archive: bytes) -> int:
    """An offset in the middle of the largest member's bytes (a flip in a zip header's
    padding or extra field changes no data, and rightly goes unnoticed)."""
    import struct
    import zipfile

    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack(
        "<HH", archive[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    return start + info.compress_size // 2
