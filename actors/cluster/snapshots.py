"""Taking a shard's snapshots without stopping it (DESIGN §10).

Small arrays are copied at once, large ones in pieces while the writes that would change
them wait, so a selection waits for one piece, not for the whole copy; the encoding and
the write run in a thread of their own at a lower CPU priority. Every snapshot is read
back and checked (``persistence.verify``) before it counts: only then may the WAL before
it go, and the pruning keeps the WAL from the oldest kept snapshot on, so a snapshot found
damaged later falls back to the one before it plus the WAL since.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np

from actors.cluster.restore import snapshot_names
from actors.cluster.storage import Storage
from actors.cluster.wal_writer import WalWriter
from actors.core import persistence, recovery
from actors.core.errors import InvalidInput
from actors.core.state import ShardState

# Large arrays are copied for a snapshot in pieces of about this size (first touches of
# fresh pages included, about a millisecond each here), with a yield to the
# event loop between pieces, so a selection waits for one piece, not for the whole copy.
COPY_PIECE_BYTES = 1 << 20


class Snapshots:
    """One shard's snapshots: taking, checking and pruning them."""

    def __init__(self, storage: Storage, keep: int) -> None:
        self.storage = storage
        self.keep = keep
        self.taken = 0
        self.failed = 0
        self.last_at: float | None = None
        self.last_s: float | None = None
        self.last_bytes = 0
        self._writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ripple-snapshot", initializer=_lower_priority
        )
        # Cleared while large arrays are copied: writes that would change them wait.
        self.writes_open = asyncio.Event()
        self.writes_open.set()
        self.busy = False

    async def take(
        self, state: ShardState, seq: int, rotate: Callable[[int], None] | None
    ) -> dict[str, Any]:
        """Snapshot ``seq`` of ``state``; ``rotate(seq)`` moves the WAL to its segment at
        the instant the copy starts. Raises what the storage raised (``failed`` counts)."""
        if self.busy:
            return {"skipped": "a snapshot is already being taken"}
        self.busy = True
        t0 = time.perf_counter()
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
                if rotate is not None:
                    rotate(seq)
                for key in large:
                    arrays[key] = await _copy_in_pieces(arrays[key], spare.get(key))
            finally:
                self.writes_open.set()

            def write(out: BinaryIO) -> None:
                persistence.write(arrays, meta, out)

            size = await loop.run_in_executor(self._writer, self._put_verified, name, write)
        except BaseException:
            self.failed += 1
            raise
        finally:
            self.busy = False
        self.taken += 1
        self.last_at = time.time()
        self.last_s = time.perf_counter() - t0
        self.last_bytes = size
        state.metrics.record_snapshot(self.last_s)
        return {"seq": seq, "bytes": size, "seconds": self.last_s}

    def _put_verified(self, name: str, write: Callable[[BinaryIO], None]) -> int:
        """Write a snapshot, then read it back and check it; a bad one is removed."""
        size = self.storage.put(name, write)
        try:
            with self.storage.open_read(name) as written:
                persistence.verify(written)
        except InvalidInput as exc:
            self.storage.delete(name)
            raise OSError(f"snapshot {name} read back damaged: {exc}") from exc
        return size

    async def prune(self, log_files: WalWriter | None) -> None:
        """Snapshots past ``keep``, and the WAL segments no kept snapshot needs."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._prune, log_files)

    def _prune(self, log_files: WalWriter | None) -> None:
        snaps = snapshot_names(self.storage)
        for _, old in snaps[: -self.keep]:
            self.storage.delete(old)
        kept = snaps[-self.keep :]
        if log_files is not None and kept:
            log_files.drop_before(kept[0][0])

    def stats(self) -> dict[str, Any]:
        return {
            "snapshots": self.taken,
            "failed_snapshots": self.failed,
            "last_snapshot_age_s": None if self.last_at is None else time.time() - self.last_at,
            "last_snapshot_s": self.last_s,
            "last_snapshot_bytes": self.last_bytes,
        }

    def close(self, wait: bool = True) -> None:
        self._writer.shutdown(wait=wait)


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
