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
import contextlib
import fcntl
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from actors.cluster.storage import Storage, is_uri, open_storage
from actors.core import persistence, recovery, wal
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.errors import InvalidInput
from actors.core.state import ShardState

log = logging.getLogger(__name__)

_SNAP = re.compile(r"^snap-(\d{12})\.npz$")
_SEG = re.compile(r"^wal-(\d{12})\.log$")
# Large arrays are copied for a snapshot in pieces of about this size (first touches of
# fresh pages included, about a millisecond each here), with a yield to the
# event loop between pieces, so a selection waits for one piece, not for the whole copy.
COPY_PIECE_BYTES = 1 << 20


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
        self._retired: list[int] = []  # earlier segments, still to fsync and close

    def segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = _SEG.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def open_segment(self, seq: int) -> None:
        """Write on in segment ``seq``. The previous one is fsynced and closed by the next
        ``durable()`` (in a thread), never here: a snapshot rotates the log on the event
        loop, which must not wait for a disk flush."""
        if self.fd >= 0:
            self._retired.append(self.fd)
        path = self.dir / f"wal-{seq:012d}.log"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.seq = seq
        self.segment_bytes = 0
        self._write(wal.SEGMENT_HEADER)

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
            upto, fd, retired = self.written, self.fd, self._retired
            self._retired = []

            def flush() -> None:
                for old in retired:
                    os.fsync(old)
                    os.close(old)
                os.fsync(fd)

            await asyncio.to_thread(flush)
            self.fsyncs += 1
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
        for fd in [*self._retired, self.fd]:
            if fd >= 0:
                os.fsync(fd)
                os.close(fd)
        self._retired, self.fd = [], -1
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
        # Snapshots are encoded and written in a thread of their own at a lower CPU
        # priority: on a small machine it competes with selections for the cores.
        self._writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ripple-snapshot", initializer=_lower_priority
        )
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
                for _ in recovery.replay(state, decoded.records):
                    self.replayed_records += 1
                if decoded.torn:
                    why = f"{path.name}: {decoded.torn}"
                    self.dropped_tails.append(why)
                    log.warning("shard %d: WAL tail dropped, %s", self.shard_index, why)
            self.wal.open_segment(next_seq)
            wal_writer, metrics = self.wal, state.metrics

            def journal(record: bytes) -> None:
                wal_writer.append(record)
                metrics.wal_bytes_total += len(record)

            state.journal = journal
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
            loop = asyncio.get_running_loop()
            self.writes_open.clear()
            try:
                # The copies are allocated and their pages touched in the writer thread
                # first: faulting in fresh memory during the copy cost 5 ms per piece.
                layout = recovery.snapshot_layout(state)
                spare = await loop.run_in_executor(self._writer, _allocate, layout)
                arrays, meta, large = recovery.snapshot_parts(state)
                if self.wal is not None:
                    self.wal.open_segment(seq)
                self.next_seq = seq + 1
                for name in large:
                    arrays[name] = await _copy_in_pieces(arrays[name], spare.get(name))
            finally:
                self.writes_open.set()
            name = f"snap-{seq:012d}.npz"

            def write(out: BinaryIO) -> None:
                persistence.write(arrays, meta, out)

            size = await loop.run_in_executor(self._writer, self.storage.put, name, write)
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
        state.metrics.snapshot_s.observe(self.last_snapshot_s)
        await loop.run_in_executor(self._writer, self._prune, seq)  # big deletes take time
        return {"seq": seq, "bytes": size, "seconds": self.last_snapshot_s}

    def _prune(self, seq: int) -> None:
        """Snapshots past ``keep_snapshots``, and the WAL segments snapshot ``seq`` covers."""
        for _, old in self._snapshots()[: -self.cfg.keep_snapshots]:
            self.storage.delete(old)
        if self.wal is not None:
            self.wal.drop_before(seq)

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
        self._writer.shutdown(wait=True)
        if self.wal is not None:
            self.wal.close()


def _lower_priority() -> None:
    """Nice the calling thread (Linux: a thread has its own nice value)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _allocate(layout: dict[str, tuple[Any, Any]]) -> dict[str, np.ndarray]:
    out = {}
    for name, (shape, dtype) in layout.items():
        a = np.empty(shape, dtype)
        a[...] = 0  # touch every page here, in the writer thread
        out[name] = a
    return out


async def _copy_in_pieces(view: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``view`` made about a megabyte at a time, yielding to the event loop
    between pieces. It goes through the new array in memory order, row after row: a
    piece that spanned every row of a (100, n) history would first-touch the pages of
    the whole array at once (166 ms here with transparent huge pages)."""
    if into is not None and into.shape == view.shape and into.dtype == view.dtype:
        out = into
    else:
        out = np.empty_like(view, order="C")
    n = view.shape[-1]
    step = max(1, COPY_PIECE_BYTES // max(view.itemsize, 1))
    for lead in np.ndindex(view.shape[:-1]):
        for start in range(0, n, step):
            out[(*lead, slice(start, start + step))] = view[(*lead, slice(start, start + step))]
            await asyncio.sleep(0)
    return out
