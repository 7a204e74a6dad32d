"""A shard's durability (DESIGN §10): restore on start, the write-ahead log, snapshots,
and what happens when the storage fails.

Files, per shard:
- ``<wal_dir>/wal-<seq>.log``: the WAL in segments (``actors.cluster.wal_writer``). A
  snapshot starts a new segment, so snapshot ``seq`` holds every change of the segments
  before ``seq``. It never appends to an old segment: a restart opens the next one.
- ``<storage>/snap-<seq>.npz``: snapshots (``actors.cluster.snapshots``), each read back
  and checked after it is written.
- ``quarantine/`` beside each: damaged snapshots and copies of damaged WAL segments
  (``actors.cluster.restore``), kept for an operator, never pruned.

The parts: ``restore`` reads the files back, ``snapshots`` takes snapshots, ``wal_writer``
owns the log's file descriptors; this module holds the rules that join them, the health
of the storage and the retries.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.cluster.restore import RestoreReport, load_state
from actors.cluster.snapshots import Snapshots
from actors.cluster.storage import Storage, is_uri, open_storage
from actors.cluster.wal_writer import WalWriter
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.errors import InvalidInput, StorageUnavailable
from actors.core.metrics import Counters
from actors.core.state import ShardState

log = logging.getLogger(__name__)

# Retries of a failing storage (repairing the log, snapshots, a rebuild): the first after
# this long, doubling up to the cap, so a storage that works again is used within seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


def wal_dir_for(cfg: DurabilityConfig, namespace: str, shard_index: int) -> Path:
    if cfg.wal_dir:
        return Path(cfg.wal_dir) / f"shard-{shard_index}"
    assert cfg.storage_path is not None
    if not is_uri(cfg.storage_path):
        return Path(cfg.storage_path.removeprefix("file://")) / f"shard-{shard_index}"
    # The WAL stays on local disk when snapshots go to an object store (DESIGN §10).
    return Path(tempfile.gettempdir()) / "ripple-wal" / namespace / f"shard-{shard_index}"


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
            WalWriter(wal_dir_for(cfg, namespace, shard_index)) if cfg.mode == "wal" else None
        )
        if self.wal is not None:
            self.wal.on_sync_failure = self._sync_failed
        self.snaps = Snapshots(self.storage, cfg.keep_snapshots)
        self.writes_open = self.snaps.writes_open
        self.report = RestoreReport(shard_index)
        self.restore_s = 0.0
        self.restored_agents = 0
        # The storage's health: why it cannot persist now (None: it can), since when.
        self.problem: str | None = None
        self.problem_since: float | None = None
        self.storage_errors = 0
        self.rebuilds = 0
        # The state holds changes its log lost (a failed fsync with ``always`` whose take
        # back or rebuild failed): no write is taken until a rebuild succeeds.
        self.stale = False
        # Acknowledged records may not be on disk (a failed fsync with ``everysec`` or
        # ``no``), or a snapshot failed: one is taken as soon as it can be.
        self.snapshot_owed = False
        self._retry_s = RETRY_FIRST_S
        self._config = ShardConfig()
        self._clock: Callable[[], float] = time.time
        self._metrics = Counters()  # the live state's, once restored
        # Set by the host: receives the state rebuilt after records were taken back.
        self.adopt: Callable[[ShardState], None] | None = None

    # ------------------------------------------------------------------ health
    @property
    def storage_ok(self) -> bool:
        return self.problem is None and not self.stale

    def _failed(self, why: str, step: str) -> None:
        self.storage_errors += 1
        self._metrics.record_storage_failure(step)
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
    def restore(self, config: ShardConfig, clock: Callable[[], float] = time.time) -> ShardState:
        """The newest intact snapshot, then the WAL after it; the journal then on."""
        t0 = time.perf_counter()
        self._config, self._clock = config, clock
        state = load_state(self.storage, self.wal, config, clock, self.report)
        self._metrics = state.metrics
        if self.wal is not None:
            # Above every segment found: a broken log opens the number after it.
            self.wal.seq = self.report.next_seq - 1
            try:
                self.wal.open_segment(self.report.next_seq)
            except StorageUnavailable as exc:  # start anyway: refuse writes, retry
                self.wal.broken = "no segment could be opened at start"
                self._failed(str(exc.details[0]["reason"]), "open")
            self.report.next_seq = self.wal.seq + 1
            self._attach(state)
        self.restore_s = time.perf_counter() - t0
        self.restored_agents = len(state)
        if self.restored_agents or self.report.replayed_records:
            log.info(
                "shard %d: restored %d agents (%d WAL records) in %.2f s",
                self.shard_index,
                self.restored_agents,
                self.report.replayed_records,
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
                self._failed(str(exc.details[0]["reason"]), "append")
                raise
            metrics.record_wal_bytes(len(record))
            if self.problem is not None and not self.sync_each_write:
                self._recovered()  # the log takes records again

        state.journal = journal
        self._metrics = metrics

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
        self._failed(f"fsync the WAL: {exc.strerror or exc}", "fsync")
        if not self.sync_each_write:
            self.wal.broken = "an fsync of this segment failed"
            self.snapshot_owed = True
            return
        self.stale = True
        self._take_back()

    def _take_back(self) -> bool:
        """Cut the unsynced records from the log and rebuild the state from the disk."""
        assert self.wal is not None
        try:
            self.wal.take_back_unsynced()  # idempotent: a retry cuts at the same point
            # A rebuild is a restore: its report replaces the last one.
            report = RestoreReport(self.shard_index, next_seq=self.report.next_seq)
            state = load_state(self.storage, self.wal, self._config, self._clock, report)
            self.report = report
            # Counters go on from the replaced state's (a replay would count again what
            # it had counted); writes taken back stay counted, as the fsync failure is.
            state.metrics.take_over(self._metrics)
        except (OSError, InvalidInput) as exc:
            self._failed(f"rebuild after a failed fsync: {exc}", "rebuild")
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

    # ------------------------------------------------------------------ background
    async def _repair(self) -> None:
        """One round of getting a failing storage back into use; raises while it fails.
        The probe is a real write: the log moves to a fresh segment (a new file and its
        header, fsynced unless ``fsync: no``), which is what the next record needs."""
        assert self.wal is not None
        if self.stale and not self._take_back():
            raise StorageUnavailable("rebuild failed", [{"field": "storage", "reason": "stale"}])
        self.wal.open_segment(max(self.wal.seq + 1, self.report.next_seq))
        self.report.next_seq = self.wal.seq + 1
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
            step = "open"
            try:
                if self.wal is not None and not self.storage_ok:
                    await self._repair()
                step = "fsync"
                if self.wal is not None and self.cfg.fsync == "everysec":
                    await self.wal.durable()
                step = "snapshot"
                due = time.monotonic() - last_snapshot >= self.cfg.snapshot_interval_s
                if due or self.snapshot_owed:
                    last_snapshot = time.monotonic()
                    await self.snapshot(get_state())
                self._recovered()
            except (StorageUnavailable, OSError) as exc:
                if step == "fsync":  # counted where it failed (``_sync_failed``)
                    self.problem = self.problem or str(exc)
                else:
                    self._failed(str(exc), step)
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            except Exception:  # logged and retried next round; the WAL still has it all
                log.exception("shard %d: durability round failed", self.shard_index)

    async def snapshot(self, state: ShardState) -> dict[str, Any]:
        """A snapshot now; the WAL moves to its segment at the same instant. A failure is
        ``StorageUnavailable``, and the snapshot is retried with back-off by ``run``."""
        if self.stale:
            raise StorageUnavailable(
                "no snapshot of a state being rebuilt", [{"field": "storage", "reason": "stale"}]
            )
        seq = self.report.next_seq
        if self.wal is not None:
            seq = max(seq, self.wal.seq + 1)
        try:
            out = await self.snaps.take(
                state, seq, None if self.wal is None else self.wal.open_segment
            )
        except StorageUnavailable:
            self.snapshot_owed = True
            raise
        except OSError as exc:
            self.snapshot_owed = True
            raise StorageUnavailable(
                f"snapshot {seq} failed", [{"field": "storage", "reason": f"snapshot: {exc}"}]
            ) from exc
        if "skipped" in out:
            return out
        self.report.next_seq = seq + 1
        self.report.snap_seq = seq
        self.snapshot_owed = False
        await self.snaps.prune(self.wal)  # big deletes take time: in the snapshot thread
        return out

    def stats(self) -> dict[str, Any]:
        w, r = self.wal, self.report
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
            **self.snaps.stats(),
            "wal_bytes": 0 if w is None else _quiet(w.wal_bytes),
            "wal_records": 0 if w is None else w.written,
            "wal_fsyncs": 0 if w is None else w.fsyncs,
            "wal_failed_appends": 0 if w is None else w.failed_appends,
            "wal_failed_fsyncs": 0 if w is None else w.failed_fsyncs,
            "restore_s": self.restore_s,
            "restored_agents": self.restored_agents,
            "replayed_records": r.replayed_records,
            "dropped_wal_tails": list(r.dropped_tails),
            "damaged_wal_segments": list(r.damaged_segments),
            "skipped_snapshots": list(r.skipped_snapshots),
        }

    def close(self) -> None:
        self.snaps.close()
        if self.wal is not None:
            self.wal.close()


def _quiet(read: Callable[[], int]) -> int | None:
    """A figure for the stats, or None when the storage cannot give it now."""
    try:
        return read()
    except OSError:
        return None
