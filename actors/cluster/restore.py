"""Reading a shard's state back from its files: the newest intact snapshot, then every
WAL record after it (DESIGN §10). Used on start and to rebuild the state after a failed
fsync took records back (``actors.cluster.durability``).

A snapshot that fails its checks (``persistence``: CRCs, shapes, header) is moved to
``quarantine/`` in the storage and the one before it is used, with the WAL segments from
its ``seq`` on, which the pruning keeps for exactly this. A WAL segment with damage is
replayed around it (``wal.decode`` resynchronises on the next whole record): a torn tail
(what a crash leaves) is logged; damage in the middle is reported with the byte ranges
lost, and a copy of the segment kept in ``<wal_dir>/quarantine/`` for an operator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.cluster.storage import QUARANTINE, Storage
from actors.cluster.wal_writer import WalWriter
from actors.core import recovery, wal
from actors.core.config import ShardConfig
from actors.core.errors import InvalidInput
from actors.core.state import ShardState

log = logging.getLogger(__name__)

SNAPSHOT_NAME = re.compile(r"^snap-(\d{12})\.npz$")


def snapshot_names(storage: Storage) -> list[tuple[int, str]]:
    """The snapshots in ``storage``, oldest first, with their sequence numbers."""
    found = []
    for name in storage.names():
        m = SNAPSHOT_NAME.match(name)
        if m:
            found.append((int(m.group(1)), name))
    return sorted(found)


@dataclass
class RestoreReport:
    """What the last restore read, skipped and lost (shown in ``/v1/stats``)."""

    shard_index: int = 0
    snap_seq: int = 0  # the snapshot loaded (0: none)
    next_seq: int = 1  # above every snapshot and segment found
    replayed_records: int = 0
    dropped_tails: list[str] = field(default_factory=list)
    skipped_snapshots: list[dict[str, Any]] = field(default_factory=list)
    damaged_segments: list[dict[str, Any]] = field(default_factory=list)


def load_state(
    storage: Storage,
    log_files: WalWriter | None,
    config: ShardConfig,
    clock: Callable[[], float],
    report: RestoreReport,
) -> ShardState:
    """The newest intact snapshot, then every WAL record after it."""
    state: ShardState | None = None
    report.snap_seq = 0
    for seq, name in reversed(snapshot_names(storage)):
        try:
            state = recovery.restore(storage.get(name), config, clock)
            report.snap_seq = seq
            log.info("shard %d: loaded snapshot %s", report.shard_index, name)
            break
        except (InvalidInput, OSError) as exc:  # try the one before
            log.error("shard %d: snapshot %s unreadable: %s", report.shard_index, name, exc)
            report.skipped_snapshots.append(
                {"snapshot": name, "reason": str(exc), "kept_aside": _set_aside(storage, name)}
            )
    if state is None:
        state = ShardState(config, clock)
    report.next_seq = max(report.next_seq, report.snap_seq + 1)
    if log_files is not None:
        for seq, path in log_files.segments():
            report.next_seq = max(report.next_seq, seq + 1)
            if seq < report.snap_seq:
                continue
            data = path.read_bytes()
            decoded = wal.decode(data)
            for _ in recovery.replay(state, decoded.records):
                report.replayed_records += 1
            if decoded.torn:
                _report_damage(report, path, data, decoded)
    return state


def _set_aside(storage: Storage, name: str) -> str | None:
    try:
        return storage.set_aside(name)
    except OSError as exc:
        log.error("could not set snapshot %s aside: %s", name, exc)
        return None


def _report_damage(report: RestoreReport, path: Path, data: bytes, decoded: wal.Decoded) -> None:
    why = f"{path.name}: {decoded.torn}"
    if not decoded.damaged_inside:  # a torn tail: a crash interrupted the last write
        report.dropped_tails.append(why)
        log.warning("shard %d: WAL tail dropped, %s", report.shard_index, why)
        return
    aside = path.parent / QUARANTINE / path.name
    kept: str | None = str(aside)
    try:  # a copy an operator can inspect; the segment itself goes with a later prune
        aside.parent.mkdir(exist_ok=True)
        aside.write_bytes(data)
    except OSError as exc:
        log.error("shard %d: could not keep %s aside: %s", report.shard_index, path, exc)
        kept = None
    lost = [[a, b] for a, b in decoded.lost]
    report.damaged_segments.append(
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
        report.shard_index,
        path.name,
        lost,
        len(decoded.records),
        kept,
    )
