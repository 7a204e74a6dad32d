"""The write-ahead log's files (DESIGN §10): segments, appends, group-committed fsyncs.

Segments are ``<wal_dir>/wal-<seq>.log``; the record format is ``actors.core.wal``.
Every record is written to the operating system (``os.write``, no user-space buffer)
before the change it logs is applied, so a killed process loses nothing acknowledged;
``fsync`` decides what a crashed machine loses: ``always`` fsyncs before acknowledging
(concurrent writers share one fsync: group commit), ``everysec`` once a second, ``no``
never. A lock file (``flock``) keeps two live shards from writing one log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
from collections.abc import Callable
from pathlib import Path

from actors.core import wal
from actors.core.errors import StorageUnavailable

SEGMENT_NAME = re.compile(r"^wal-(\d{12})\.log$")


def storage_error(what: str, exc: OSError) -> StorageUnavailable:
    reason = f"{what}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return StorageUnavailable(
        "the change could not be made durable and was not applied; retry later",
        [{"field": "storage", "reason": reason}],
    )


class FileOps:
    """The system calls the log makes, in one place: a test replaces them to inject the
    faults a real disk has (EIO on a write or an fsync), which no kernel route here
    offers without device-mapper."""

    open = staticmethod(os.open)
    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    ftruncate = staticmethod(os.ftruncate)
    close = staticmethod(os.close)

    def write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.write(fd, view)
            view = view[n:]


class WalWriter:
    """The log's segments. This object owns every file descriptor of the log: it opens,
    writes, syncs and closes them, and nothing else touches them.

    A failed append never leaves a partial record that later records would sit behind:
    the segment is truncated back to its last whole record, or, when even that fails,
    it takes no more records and the next append opens a fresh segment (with its
    header) first. A new segment replaces the current one only once it exists with its
    header, so a refused ``open`` leaves the log writing where it was."""

    def __init__(self, directory: Path, ops: FileOps | None = None) -> None:
        self.ops = ops or FileOps()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
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
        self.segment_bytes = 0  # the current segment's whole records, header included
        self.total_bytes = 0
        self.fsyncs = 0
        self.failed_appends = 0
        self.failed_fsyncs = 0
        # (segment, bytes) known on disk: what survives a lost machine, and what is kept
        # when the writes after it must be taken back (a failed fsync with ``always``).
        self.durable_at = (0, 0)
        # Why the current segment takes no more records (None: it does).
        self.broken: str | None = None
        self._syncing: asyncio.Future[None] | None = None
        self._retired: list[int] = []  # earlier segments, still to fsync and close
        # Called on the event loop as soon as an fsync failed, before anyone waiting on it
        # resumes: the host decides what the unsynced records mean (``ShardDurability``).
        self.on_sync_failure: Callable[[OSError], None] | None = None

    def segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = SEGMENT_NAME.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def open_segment(self, seq: int) -> None:
        """Write on in a new segment ``seq``. The previous one is fsynced and closed by
        the next ``durable()`` (in a thread), never here: a snapshot rotates the log on
        the event loop, which must not wait for a disk flush. Raises
        ``StorageUnavailable`` (and keeps the current segment) when the file cannot be
        made. A file already named so is never truncated (it may hold records): the
        next number is taken instead, which any snapshot ``<= seq`` still replays."""
        for _ in range(1000):
            path = self.dir / f"wal-{seq:012d}.log"
            try:
                fd = self.ops.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                seq += 1
            except OSError as exc:
                raise storage_error("open a WAL segment", exc) from exc
        else:
            raise storage_error("open a WAL segment", OSError("no free segment number"))
        try:
            self.ops.write_all(fd, wal.SEGMENT_HEADER)
        except OSError as exc:
            self.ops.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise storage_error("write a WAL segment header", exc) from exc
        if self.fd >= 0:
            self._retired.append(self.fd)
        if self.durable_at[0] < seq and self.synced == self.written:
            self.durable_at = (seq, 0)
        self.fd, self.seq, self.broken = fd, seq, None
        self.segment_bytes = len(wal.SEGMENT_HEADER)
        self.total_bytes += len(wal.SEGMENT_HEADER)

    def append(self, record: bytes) -> None:
        """Write one record to the operating system, whole or not at all."""
        if self.broken is not None or self.fd < 0:
            self.open_segment(self.seq + 1)
        start = self.segment_bytes
        try:
            self.ops.write_all(self.fd, record)
        except OSError as exc:
            self.failed_appends += 1
            try:  # take back the part that was written
                self.ops.ftruncate(self.fd, start)
            except OSError as cut:
                self.broken = f"could not truncate a failed append: {cut.strerror or cut}"
            raise storage_error("append to the WAL", exc) from exc
        self.segment_bytes += len(record)
        self.total_bytes += len(record)
        self.written += 1

    async def durable(self, probe: bool = False) -> None:
        """Return once every record written so far is on disk. Callers that arrive while
        an fsync runs wait for the next one, which covers them all (group commit).
        Raises ``StorageUnavailable`` when the fsync failed. ``probe``: sync even when
        nothing new was written (a check that the storage syncs again)."""
        target = self.written
        if probe and self._syncing is None:
            self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)
        while self.synced < target:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        try:
            upto, fd, retired = self.written, self.fd, list(self._retired)
            at = (self.seq, self.segment_bytes)
            closed: list[int] = []

            def flush() -> None:
                for old in retired:
                    self.ops.fsync(old)
                    self.ops.close(old)
                    closed.append(old)
                self.ops.fsync(fd)

            try:
                await asyncio.to_thread(flush)
            except OSError as exc:
                self.failed_fsyncs += 1
                self._retired = [f for f in self._retired if f not in closed]
                if self.on_sync_failure is not None:
                    self.on_sync_failure(exc)
                raise storage_error("fsync the WAL", exc) from exc
            self._retired = [f for f in self._retired if f not in closed]
            self.fsyncs += 1
            self.synced = max(self.synced, upto)
            self.durable_at = max(self.durable_at, at)
        finally:
            self._syncing = None

    def take_back_unsynced(self) -> None:
        """Remove from disk every record after ``durable_at`` (their fsync failed: they
        may or may not be there, and their writers hear they were not applied). The
        current segment is closed; the next append opens a fresh one. The truncation
        itself is synced where the disk allows: a killed process never sees the records
        again; a machine lost before the disk syncs again might."""
        seq0, size0 = self.durable_at
        for fd in [*self._retired, self.fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    self.ops.close(fd)
        self._retired, self.fd = [], -1
        for s, p in self.segments():
            if s > seq0 or (s == seq0 and size0 == 0):
                p.unlink()
            elif s == seq0:
                fd = self.ops.open(p, os.O_WRONLY)
                try:
                    self.ops.ftruncate(fd, size0)
                    with contextlib.suppress(OSError):
                        self.ops.fsync(fd)
                finally:
                    self.ops.close(fd)
        with contextlib.suppress(OSError):
            dir_fd = self.ops.open(self.dir, os.O_RDONLY)
            try:
                self.ops.fsync(dir_fd)
            finally:
                self.ops.close(dir_fd)
        self.synced = self.written

    def drop_before(self, seq: int) -> None:
        for s, p in self.segments():
            if s < seq:
                p.unlink(missing_ok=True)

    def wal_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in self.segments())

    def close(self) -> None:
        for fd in [*self._retired, self.fd]:
            if fd >= 0:
                with contextlib.suppress(OSError):  # a failing disk must not stop a shutdown
                    self.ops.fsync(fd)
                with contextlib.suppress(OSError):
                    self.ops.close(fd)
        self._retired, self.fd = [], -1
        os.close(self._lock_fd)
