"""A shard's durability (DESIGN §10): restore on start, the write-ahead log, snapshots.

Files, per shard:
- ``<wal_dir>/wal-<seq>.log``: the WAL in segments. A snapshot starts a new segment, so
  snapshot ``seq`` holds every change of the segments before ``seq``. A restore loads the
  newest readable snapshot and replays the segments from its ``seq`` on, in order; a torn
  or corrupt tail is logged and dropped. It never appends to an old segment (its tail may
  be torn): it opens the next one.
- ``<storage>/snap-<seq>.npz``: snapshots (``actors.core.persistence``), the newest
  ``keep_snapshots`` kept; segments older than the newest snapshot are deleted.

Every record is written to the operating system (``os.write``, no user-space buffer)
before the change is acknowledged, so a killed process loses nothing; ``fsync`` decides
what a crashed machine loses: ``always`` fsyncs before acknowledging (concurrent writers
share one fsync: group commit), ``everysec`` once a second, ``no`` never.

A lock file (``flock``) in the WAL directory keeps two live shards from writing one log.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from actors.cluster.storage import Storage, is_uri, open_storage
from actors.core import persistence, wal
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.errors import InvalidInput
from actors.core.state import ShardState

log = logging.getLogger(__name__)

_SNAP = re.compile(r"^snap-(\d{12})\.npz$")
_SEG = re.compile(r"^wal-(\d{12})\.log$")
# Large arrays are copied for a snapshot in pieces of about this size, with a yield to the
# event loop between pieces, so a selection waits for one piece, not for the whole copy.
COPY_PIECE_BYTES = 4 << 20


def wal_dir_for(cfg: DurabilityConfig, namespace: str, shard_index: int) -> Path:
    if cfg.wal_dir:
        return Path(cfg.wal_dir) / f"shard-{shard_index}"
    assert cfg.storage_path is not None
    if not is_uri(cfg.storage_path):
        return Path(cfg.storage_path.removeprefix("file://")) / f"shard-{shard_index}"
    # The WAL stays on local disk when snapshots go to an object store (DESIGN §10).
    return Path(tempfile.gettempdir()) / "ripple-wal" / namespace / f"shard-{shard_index}"


class WalWriter:
    """Append-only segments with group-committed fsyncs."""

    def __init__(self, directory: Path, fsync: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync_mode = fsync
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise RuntimeError(f"WAL directory {self.dir} is in use by another live shard") from exc
        self.fd = -1
        self.seq = 0
        self.written = 0  # records written
        self.synced = 0  # records known on disk
        self.segment_bytes = 0
        self.total_bytes = 0
        self.fsyncs = 0
        self._syncing: asyncio.Future[None] | None = None

    def segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = _SEG.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def open_segment(self, seq: int) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
        path = self.dir / f"wal-{seq:012d}.log"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.seq = seq
        self.segment_bytes = 0
        self._write(wal.SEGMENT_HEADER)
        self.synced = self.written

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.segment_bytes += len(data)
        self.total_bytes += len(data)

    def append(self, record: bytes) -> None:
        self._write(record)
        self.written += 1

    async def durable(self) -> None:
        """Return once every record written so far is on disk. Callers that arrive while
        an fsync runs wait for the next one, which covers them all (group commit)."""
        target = self.written
        while self.synced < target:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        try:
            upto, fd = self.written, self.fd
            await asyncio.to_thread(os.fsync, fd)
            self.fsyncs += 1
            if fd == self.fd:
                self.synced = max(self.synced, upto)
        finally:
            self._syncing = None

    def drop_before(self, seq: int) -> None:
        for s, p in self.segments():
            if s < seq:
                p.unlink(missing_ok=True)

    def wal_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in self.segments())

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
        os.close(self._lock_fd)


class ShardDurability:
    """Restore, log and snapshot one shard's state, as ``DurabilityConfig`` says."""

    def __init__(self, cfg: DurabilityConfig, shard_index: int, namespace: str) -> None:
        assert cfg.storage_path is not None
        self.cfg = cfg
        self.shard_index = shard_index
        self.storage: Storage = open_storage(cfg.storage_path, shard_index)
        self.wal = (
            WalWriter(wal_dir_for(cfg, namespace, shard_index), cfg.fsync)
            if cfg.mode == "wal"
            else None
        )
        self.snap_seq = 0
        self.last_snapshot_at: float | None = None
        self.last_snapshot_s: float | None = None
        self.last_snapshot_bytes = 0
        self.snapshots = 0
        self.failed_snapshots = 0
        self.restore_s = 0.0
        self.restored_agents = 0
        self.replayed_records = 0
        self.dropped_tails: list[str] = []
        self.writes_open = asyncio.Event()
        self.writes_open.set()
        self._snapshotting = False

    # ------------------------------------------------------------------ restore
    def _snapshots(self) -> list[tuple[int, str]]:
        found = []
        for name in self.storage.names():
            m = _SNAP.match(name)
            if m:
                found.append((int(m.group(1)), name))
        return sorted(found)

    def restore(self, config: ShardConfig, clock: Callable[[], float] = time.time) -> ShardState:
        """The newest readable snapshot, then the WAL after it; the journal then on."""
        t0 = time.perf_counter()
        state: ShardState | None = None
        for seq, name in reversed(self._snapshots()):
            try:
                state = ShardState.restore(self.storage.get(name), config, clock)
                self.snap_seq = seq
                log.info("shard %d: loaded snapshot %s", self.shard_index, name)
                break
            except (InvalidInput, OSError) as exc:  # try the one before
                log.error("shard %d: snapshot %s unreadable: %s", self.shard_index, name, exc)
        if state is None:
            state = ShardState(config, clock)
        next_seq = self.snap_seq + 1
        if self.wal is not None:
            for seq, path in self.wal.segments():
                next_seq = max(next_seq, seq + 1)
                if seq < self.snap_seq:
                    continue
                decoded = wal.decode(path.read_bytes())
                for _ in state.replay(decoded.records):
                    self.replayed_records += 1
                if decoded.torn:
                    why = f"{path.name}: {decoded.torn}"
                    self.dropped_tails.append(why)
                    log.warning("shard %d: WAL tail dropped, %s", self.shard_index, why)
            self.wal.open_segment(next_seq)
            state.journal = self.wal.append
            next_seq += 1
        # The sequence number of the next snapshot (and of the segment it starts).
        self.next_seq = next_seq
        self.restore_s = time.perf_counter() - t0
        self.restored_agents = len(state)
        if self.restored_agents or self.replayed_records:
            log.info(
                "shard %d: restored %d agents (%d WAL records) in %.2f s",
                self.shard_index,
                self.restored_agents,
                self.replayed_records,
                self.restore_s,
            )
        return state

    # ------------------------------------------------------------------ writes
    @property
    def sync_each_write(self) -> bool:
        return self.wal is not None and self.cfg.fsync == "always"

    async def commit(self) -> None:
        """With ``fsync: always``, wait until what was written is on disk."""
        if self.sync_each_write:
            assert self.wal is not None
            await self.wal.durable()

    async def run(self, state: ShardState) -> None:
        """Background work: the once-a-second fsync and the periodic snapshots."""
        last_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(1.0 if self.wal is not None else self.cfg.snapshot_interval_s)
            try:
                if self.wal is not None and self.cfg.fsync == "everysec":
                    await self.wal.durable()
                if time.monotonic() - last_snapshot >= self.cfg.snapshot_interval_s:
                    last_snapshot = time.monotonic()
                    await self.snapshot(state)
            except Exception:  # logged and retried next round; the WAL still has it all
                log.exception("shard %d: durability round failed", self.shard_index)

    async def snapshot(self, state: ShardState) -> dict[str, Any]:
        """Take a snapshot without stopping selections: small arrays now, large ones in
        pieces while writes that would change them wait, the encoding and the upload in
        a thread. The WAL moves to a new segment at the same instant."""
        if self._snapshotting:
            return {"skipped": "a snapshot is already being taken"}
        self._snapshotting = True
        t0 = time.perf_counter()
        seq = self.next_seq
        try:
            self.writes_open.clear()
            try:
                arrays, meta, large = state.snapshot_parts()
                if self.wal is not None:
                    self.wal.open_segment(seq)
                self.next_seq = seq + 1
                for name in large:
                    arrays[name] = await _copy_in_pieces(arrays[name])
            finally:
                self.writes_open.set()
            name = f"snap-{seq:012d}.npz"

            def write(out: BinaryIO) -> None:
                persistence.write(arrays, meta, out)

            size = await asyncio.to_thread(self.storage.put, name, write)
        except BaseException:
            self.failed_snapshots += 1
            self._snapshotting = False
            raise
        self._snapshotting = False
        self.snap_seq = seq
        self.snapshots += 1
        self.last_snapshot_at = time.time()
        self.last_snapshot_s = time.perf_counter() - t0
        self.last_snapshot_bytes = size
        for _, old in self._snapshots()[: -self.cfg.keep_snapshots]:
            self.storage.delete(old)
        if self.wal is not None:
            self.wal.drop_before(seq)
        return {"seq": seq, "bytes": size, "seconds": self.last_snapshot_s}

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self.cfg.mode,
            "fsync": self.cfg.fsync,
            "storage": self.storage.where,
            "snapshots": self.snapshots,
            "failed_snapshots": self.failed_snapshots,
            "last_snapshot_age_s": (
                None if self.last_snapshot_at is None else time.time() - self.last_snapshot_at
            ),
            "last_snapshot_s": self.last_snapshot_s,
            "last_snapshot_bytes": self.last_snapshot_bytes,
            "wal_bytes": 0 if self.wal is None else self.wal.wal_bytes(),
            "wal_records": 0 if self.wal is None else self.wal.written,
            "wal_fsyncs": 0 if self.wal is None else self.wal.fsyncs,
            "restore_s": self.restore_s,
            "restored_agents": self.restored_agents,
            "replayed_records": self.replayed_records,
            "dropped_wal_tails": list(self.dropped_tails),
        }

    def close(self) -> None:
        if self.wal is not None:
            self.wal.close()


async def _copy_in_pieces(view: np.ndarray) -> np.ndarray:
    """A copy of ``view`` made a few MB at a time, yielding to the event loop between."""
    out = np.empty_like(view)
    n = view.shape[-1]
    per_row = max(1, view.nbytes // max(n, 1))
    step = max(1, COPY_PIECE_BYTES // per_row)
    for start in range(0, n, step):
        out[..., start : start + step] = view[..., start : start + step]
        await asyncio.sleep(0)
    return out
