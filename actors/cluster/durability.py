"""A shard's durability (DESIGN §10): restore on start, the write-ahead log, snapshots,
and what happens when the storage fails.

Files, per shard:
- ``<wal_dir>/wal-<seq>.log``: the WAL in segments (``actors.cluster.wal_writer``). A
  snapshot starts a new segment, so snapshot ``seq`` holds every change of the segments
  before ``seq``. A restore loads the newest intact snapshot and replays the segments from
  its ``seq`` on, in order; damage in a segment is skipped up to the next whole record
  (``actors.core.wal``), a torn tail logged, damage in the middle kept aside in
  ``<wal_dir>/quarantine/``. It never appends to an old segment: it opens the next one.
- ``<storage>/snap-<seq>.npz``: snapshots (``actors.core.persistence``), each read back and
  checked after it is written; the newest ``keep_snapshots`` kept, and the WAL segments
  from the oldest kept one on, so a snapshot found damaged later falls back to the one
  before it plus the WAL since. A damaged snapshot is moved to ``<storage>/quarantine/``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from actors.cluster.wal_writer import WalWriter
from actors.core import persistence, recovery, wal
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.errors import InvalidInput, StorageUnavailable
from actors.core.state import ShardState

log = logging.getLogger(__name__)

_SNAP = re.compile(r"^snap-(\d{12})\.npz$")
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


# Retries of a failing storage (repairing the log, snapshots, a rebuild): the first after
# this long, doubling up to the cap, so a storage that works again is used within seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
_TAKEN_BACK = "records taken back after a failed fsync"


class ShardDurability:
    """Restore, log and snapshot one shard's state, as ``DurabilityConfig`` says.

    When the storage fails (disk full, I/O errors, refused files), a change whose record
    could not be made durable in the chosen fsync mode is not applied and its caller hears
    ``StorageUnavailable`` (a 503); ``problem`` says why (``/readyz`` and ``/v1/stats``
    show it), and ``run`` retries with back-off until the log and the snapshots work again.
    With ``fsync: always`` a failed fsync takes back the records it covered: they are cut
    from the log and the state is rebuilt from what is on disk (``adopt`` hands the host
    the rebuilt state), so a write refused after it was applied leaves no trace."""

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
        if self.wal is not None:
            self.wal.on_sync_failure = self._sync_failed
        self.snap_seq = 0
        self.next_seq = 1
        self.last_snapshot_at: float | None = None
        self.last_snapshot_s: float | None = None
        self.last_snapshot_bytes = 0
        self.snapshots = 0
        self.failed_snapshots = 0
        self.restore_s = 0.0
        self.restored_agents = 0
        self.replayed_records = 0
        self.dropped_tails: list[str] = []
        self.skipped_snapshots: list[dict[str, Any]] = []
        self.damaged_segments: list[dict[str, Any]] = []
        # The storage's health: why it cannot persist now (None: it can), since when.
        self.problem: str | None = None
        self.problem_since: float | None = None
        self.storage_errors = 0
        self.rebuilds = 0
        # The state holds changes its log lost (a failed fsync with ``always`` whose take
        # back or rebuild failed): no write is taken until a rebuild succeeds.
        self.stale = False
        # Acknowledged records may not be on disk (a failed fsync with ``everysec`` or
        # ``no``): a snapshot, which holds them, is taken as soon as it can be.
        self.snapshot_owed = False
        self._retry_s = RETRY_FIRST_S
        self._config: ShardConfig | None = None
        self._clock: Callable[[], float] = time.time
        # Set by the host: receives the state rebuilt after records were taken back.
        self.adopt: Callable[[ShardState], None] | None = None
        # Snapshots are encoded and written in a thread of their own at a lower CPU
        # priority: on a small machine it competes with selections for the cores.
        self._writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ripple-snapshot", initializer=_lower_priority
        )
        self.writes_open = asyncio.Event()
        self.writes_open.set()
        self._snapshotting = False

    # ------------------------------------------------------------------ health
    @property
    def storage_ok(self) -> bool:
        return self.problem is None and not self.stale

    def _failed(self, why: str) -> None:
        self.storage_errors += 1
        if self.problem is None:
            self.problem_since = time.time()
            log.error("shard %d: storage failing: %s", self.shard_index, why)
        self.problem = why

    def _recovered(self) -> None:
        if self.problem is not None:
            log.warning(
                "shard %d: storage works again after %.1f s (%s)",
                self.shard_index,
                time.time() - (self.problem_since or time.time()),
                self.problem,
            )
        self.problem = self.problem_since = None
        self._retry_s = RETRY_FIRST_S

    # ------------------------------------------------------------------ restore
    def _snapshots(self) -> list[tuple[int, str]]:
        found = []
        for name in self.storage.names():
            m = _SNAP.match(name)
            if m:
                found.append((int(m.group(1)), name))
        return sorted(found)

    def _load(self, config: ShardConfig, clock: Callable[[], float]) -> ShardState:
        """The newest intact snapshot, then every WAL record after it. A corrupt snapshot
        is set aside and the one before it used (its WAL segments are kept for that); a
        damaged WAL segment is replayed around the damage and a copy kept aside."""
        state: ShardState | None = None
        self.snap_seq = 0
        for seq, name in reversed(self._snapshots()):
            try:
                state = ShardState.restore(self.storage.get(name), config, clock)
                self.snap_seq = seq
                log.info("shard %d: loaded snapshot %s", self.shard_index, name)
                break
            except (InvalidInput, OSError) as exc:  # try the one before
                log.error("shard %d: snapshot %s unreadable: %s", self.shard_index, name, exc)
                kept = self._set_aside(name)
                self.skipped_snapshots.append(
                    {"snapshot": name, "reason": str(exc), "kept_aside": kept}
                )
        if state is None:
            state = ShardState(config, clock)
        self.next_seq = max(self.next_seq, self.snap_seq + 1)
        if self.wal is not None:
            for seq, path in self.wal.segments():
                self.next_seq = max(self.next_seq, seq + 1)
                if seq < self.snap_seq:
                    continue
                data = path.read_bytes()
                decoded = wal.decode(data)
                for _ in recovery.replay(state, decoded.records):
                    self.replayed_records += 1
                if decoded.torn:
                    self._report_damage(path, data, decoded)
        return state

    def _set_aside(self, name: str) -> str | None:
        try:
            return self.storage.set_aside(name)
        except OSError as exc:
            log.error("shard %d: could not set %s aside: %s", self.shard_index, name, exc)
            return None

    def _report_damage(self, path: Path, data: bytes, decoded: wal.Decoded) -> None:
        why = f"{path.name}: {decoded.torn}"
        if not decoded.damaged_inside:  # a torn tail: a crash interrupted the last write
            self.dropped_tails.append(why)
            log.warning("shard %d: WAL tail dropped, %s", self.shard_index, why)
            return
        aside = path.parent / "quarantine" / path.name
        kept: str | None = str(aside)
        try:  # a copy an operator can inspect; the segment itself goes with a later prune
            aside.parent.mkdir(exist_ok=True)
            aside.write_bytes(data)
        except OSError as exc:
            log.error("shard %d: could not keep %s aside: %s", self.shard_index, path, exc)
            kept = None
        lost = [[a, b] for a, b in decoded.lost]
        self.damaged_segments.append(
            {
                "segment": path.name,
                "reason": decoded.torn,
                "lost_bytes": lost,
                "records_kept": len(decoded.records),
                "kept_aside": kept,
            }
        )
        log.error(
            "shard %d: WAL segment %s damaged, bytes %s skipped, %d records kept; copy in %s",
            self.shard_index,
            path.name,
            lost,
            len(decoded.records),
            kept,
        )

    def restore(self, config: ShardConfig, clock: Callable[[], float] = time.time) -> ShardState:
        """The newest readable snapshot, then the WAL after it; the journal then on."""
        t0 = time.perf_counter()
        self._config, self._clock = config, clock
        state = self._load(config, clock)
        if self.wal is not None:
            self.wal.open_segment(self.next_seq)
            self.next_seq += 1
            self._attach(state)
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

    def _attach(self, state: ShardState) -> None:
        """Log every change of ``state`` before it is applied (``ShardState.journal``)."""
        writer, metrics = self.wal, state.metrics
        assert writer is not None

        def journal(record: bytes) -> None:
            if self.stale:
                raise StorageUnavailable(
                    "the shard is rebuilding its state after a storage fault; retry later",
                    [{"field": "storage", "reason": self.problem or "rebuilding"}],
                )
            try:
                writer.append(record)
            except StorageUnavailable as exc:
                self._failed(str(exc.details[0]["reason"]))
                raise
            metrics.wal_bytes_total += len(record)
            if self.problem is not None and not self.sync_each_write:
                self._recovered()  # the log takes records again

        state.journal = journal

    # ------------------------------------------------------------------ writes
    @property
    def sync_each_write(self) -> bool:
        return self.wal is not None and self.cfg.fsync == "always"

    async def commit(self) -> None:
        """With ``fsync: always``, wait until what was written is on disk."""
        if self.sync_each_write:
            assert self.wal is not None
            await self.wal.durable()
            if self.problem is not None and not self.stale:
                self._recovered()  # records reach the disk again

    def _sync_failed(self, exc: OSError) -> None:
        """An fsync failed. With ``always``, nobody heard "applied" for the records it
        covered: they are cut from the log and the state rebuilt from the disk, now,
        before any waiting writer resumes. Otherwise they were acknowledged: a snapshot
        will hold them, and the log moves to a fresh segment meanwhile."""
        assert self.wal is not None
        self._failed(f"fsync the WAL: {exc.strerror or exc}")
        if not self.sync_each_write:
            self.wal.broken = "an fsync of this segment failed"
            self.snapshot_owed = True
            return
        self.stale = True
        self._take_back()

    def _take_back(self) -> bool:
        """Cut the unsynced records from the log and rebuild the state from the disk."""
        assert self.wal is not None and self._config is not None
        try:
            if self.wal.broken != _TAKEN_BACK:
                self.wal.take_back_unsynced()
                self.wal.broken = _TAKEN_BACK
            state = self._load(self._config, self._clock)
        except (OSError, InvalidInput) as exc:
            self._failed(f"rebuild after a failed fsync: {exc}")
            return False
        self._attach(state)
        self.stale = False
        self.rebuilds += 1
        if self.adopt is not None:
            self.adopt(state)
        log.warning(
            "shard %d: records after the last good fsync taken back; state rebuilt (%d agents)",
            self.shard_index,
            len(state),
        )
        return True

    async def _repair(self) -> None:
        """One round of getting a failing storage back into use; raises while it fails.
        The probe is a real write: the log moves to a fresh segment (a new file and its
        header, fsynced unless ``fsync: no``), which is what the next record needs."""
        assert self.wal is not None
        if self.stale and not self._take_back():
            raise StorageUnavailable("rebuild failed", [{"field": "storage", "reason": "stale"}])
        self.wal.open_segment(max(self.wal.seq + 1, self.next_seq))
        self.next_seq = self.wal.seq + 1
        if self.cfg.fsync != "no":
            await self.wal.durable(probe=True)

    async def run(self, get_state: Callable[[], ShardState]) -> None:
        """Background work: the once-a-second fsync, the periodic snapshots, and while the
        storage fails, retries with back-off (repair the log, rebuild, snapshot)."""
        last_snapshot = time.monotonic()
        while True:
            failing = not self.storage_ok or self.snapshot_owed
            pause = self._retry_s if failing else 1.0
            if self.wal is None and not failing:
                pause = self.cfg.snapshot_interval_s
            await asyncio.sleep(pause)
            try:
                if self.wal is not None and not self.storage_ok:
                    await self._repair()
                if self.wal is not None and self.cfg.fsync == "everysec":
                    await self.wal.durable()
                due = time.monotonic() - last_snapshot >= self.cfg.snapshot_interval_s
                if due or self.snapshot_owed:
                    last_snapshot = time.monotonic()
                    await self.snapshot(get_state())
                    self.snapshot_owed = False
                self._recovered()
            except (StorageUnavailable, OSError) as exc:
                self._failed(str(exc))
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            except Exception:  # logged and retried next round; the WAL still has it all
                log.exception("shard %d: durability round failed", self.shard_index)

    async def snapshot(self, state: ShardState) -> dict[str, Any]:
        """Take a snapshot without stopping selections: small arrays now, large ones in
        pieces while writes that would change them wait, the encoding and the upload in
        a thread. The WAL moves to a new segment at the same instant. The snapshot is
        read back and checked before the WAL it covers may go."""
        if self._snapshotting:
            return {"skipped": "a snapshot is already being taken"}
        if self.stale:
            raise StorageUnavailable(
                "no snapshot of a state being rebuilt", [{"field": "storage", "reason": "stale"}]
            )
        self._snapshotting = True
        t0 = time.perf_counter()
        seq = self.next_seq if self.wal is None else max(self.next_seq, self.wal.seq + 1)
        name = f"snap-{seq:012d}.npz"
        loop = asyncio.get_running_loop()
        try:
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
                for key in large:
                    arrays[key] = await _copy_in_pieces(arrays[key], spare.get(key))
            finally:
                self.writes_open.set()

            def write(out: BinaryIO) -> None:
                persistence.write(arrays, meta, out)

            size = await loop.run_in_executor(self._writer, self._put_verified, name, write)
        except (OSError, StorageUnavailable) as exc:
            self.failed_snapshots += 1
            self.snapshot_owed = True  # retried with back-off, not a whole interval later
            if isinstance(exc, StorageUnavailable):
                raise
            raise StorageUnavailable(
                f"snapshot {name} failed", [{"field": "storage", "reason": f"snapshot: {exc}"}]
            ) from exc
        except BaseException:
            self.failed_snapshots += 1
            raise
        finally:
            self._snapshotting = False
        self.snap_seq = seq
        self.snapshots += 1
        self.last_snapshot_at = time.time()
        self.last_snapshot_s = time.perf_counter() - t0
        self.last_snapshot_bytes = size
        state.metrics.snapshot_s.observe(self.last_snapshot_s)
        await loop.run_in_executor(self._writer, self._prune)  # big deletes take time
        return {"seq": seq, "bytes": size, "seconds": self.last_snapshot_s}

    def _put_verified(self, name: str, write: Callable[[BinaryIO], None]) -> int:
        """Write a snapshot, then read it back and check it; a bad one is removed."""
        size = self.storage.put(name, write)
        try:
            persistence.verify(self.storage.get(name))
        except InvalidInput as exc:
            self.storage.delete(name)
            raise OSError(f"snapshot {name} read back damaged: {exc}") from exc
        return size

    def _prune(self) -> None:
        """Snapshots past ``keep_snapshots``, and the WAL segments no kept snapshot needs:
        the oldest kept snapshot can still be restored from (with the WAL after it) if a
        newer one is found damaged later."""
        snaps = self._snapshots()
        for _, old in snaps[: -self.cfg.keep_snapshots]:
            self.storage.delete(old)
        kept = snaps[-self.cfg.keep_snapshots :]
        if self.wal is not None and kept:
            self.wal.drop_before(kept[0][0])

    def stats(self) -> dict[str, Any]:
        w = self.wal
        return {
            "mode": self.cfg.mode,
            "fsync": self.cfg.fsync,
            "storage": self.storage.where,
            "storage_ok": self.storage_ok,
            "storage_problem": self.problem,
            "storage_problem_for_s": (
                None if self.problem_since is None else time.time() - self.problem_since
            ),
            "storage_errors": self.storage_errors,
            "rebuilds": self.rebuilds,
            "snapshots": self.snapshots,
            "failed_snapshots": self.failed_snapshots,
            "last_snapshot_age_s": (
                None if self.last_snapshot_at is None else time.time() - self.last_snapshot_at
            ),
            "last_snapshot_s": self.last_snapshot_s,
            "last_snapshot_bytes": self.last_snapshot_bytes,
            "wal_bytes": 0 if w is None else _quiet(w.wal_bytes),
            "wal_records": 0 if w is None else w.written,
            "wal_fsyncs": 0 if w is None else w.fsyncs,
            "wal_failed_appends": 0 if w is None else w.failed_appends,
            "wal_failed_fsyncs": 0 if w is None else w.failed_fsyncs,
            "restore_s": self.restore_s,
            "restored_agents": self.restored_agents,
            "replayed_records": self.replayed_records,
            "dropped_wal_tails": list(self.dropped_tails),
            "damaged_wal_segments": list(self.damaged_segments),
            "skipped_snapshots": list(self.skipped_snapshots),
        }

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        if self.wal is not None:
            self.wal.close()


def _quiet(read: Callable[[], int]) -> int | None:
    """A figure for the stats, or None when the storage cannot give it now."""
    try:
        return read()
    except OSError:
        return None


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
