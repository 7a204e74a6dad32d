"""One lane for writes inside a shard actor: coalesces queued batches, lets reads through.

A shard actor runs one event loop, and every method is CPU work without awaits, so calls
run first-come first-served. Under heavy ingest a selection would wait behind every batch
already queued. The lane changes that: ``submit`` only enqueues; one worker task ingests
what has queued as a single merged batch (fewer, larger passes over the arrays), then
yields to the loop, so a selection waits for at most one merged batch. Merging keeps the
semantics of sending the batches one after another: items keep their order, so "newest
timestamp wins, ties go to the later item" holds across batches too. Plain asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from actors.core.columns import SignalColumns
from actors.core.errors import Unavailable
from actors.core.models import IngestResult, RejectedItem

DEFAULT_MAX_MERGED_SIGNALS = 20_000


class IngestLane:
    def __init__(
        self,
        ingest: Callable[[SignalColumns], IngestResult],
        max_merged_signals: int = DEFAULT_MAX_MERGED_SIGNALS,
        max_queued_signals: int | None = None,
        before_apply: Callable[[], Awaitable[object]] | None = None,
        after_apply: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._ingest = ingest
        # Hooks of a durable shard: wait while a snapshot copies the arrays ingest would
        # change; and, with fsync always, until the batch's WAL record is on disk before
        # anyone hears it was applied (batches that queue meanwhile share the next fsync).
        self._before_apply = before_apply
        self._after_apply = after_apply
        self._max = max_merged_signals
        self._max_queued = max_queued_signals
        self.queued_signals = 0
        self.refused_signals = 0
        self._queue: list[tuple[SignalColumns, asyncio.Future[IngestResult]]] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.merged_batches = 0

    async def submit(self, cols: SignalColumns) -> IngestResult:
        loop = asyncio.get_running_loop()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        if self._max_queued is not None and self.queued_signals + len(cols) > self._max_queued:
            # Back-pressure: refuse the whole batch, unapplied, rather than let the queue
            # (and the process) grow without end. Callers hear a retryable error.
            self.refused_signals += len(cols)
            raise Unavailable(
                f"shard overloaded: {self.queued_signals} signals already queued",
                [{"field": "signals", "reason": f"queue bound {self._max_queued}; retry later"}],
            )
        fut: asyncio.Future[IngestResult] = loop.create_future()
        self._queue.append((cols, fut))
        self.queued_signals += len(cols)
        self._wakeup.set()
        return await fut

    def _take(self) -> list[tuple[SignalColumns, asyncio.Future[IngestResult]]]:
        taken: list[tuple[SignalColumns, asyncio.Future[IngestResult]]] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0][0]) <= self._max):
            item = self._queue.pop(0)
            taken.append(item)
            size += len(item[0])
        return taken

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if self._before_apply is not None:
                    await self._before_apply()
                taken = self._take()
                result = self._apply(taken)
                if self._after_apply is not None and not isinstance(result, Exception):
                    try:
                        await self._after_apply()
                    except Exception as exc:  # not durable: nobody may hear "applied"
                        result = exc
                self._answer(taken, result)
                # Let selections and other reads that arrived meanwhile run now.
                await asyncio.sleep(0)

    def _apply(
        self, taken: list[tuple[SignalColumns, asyncio.Future[IngestResult]]]
    ) -> IngestResult | Exception:
        parts = [c for c, _ in taken]
        self.queued_signals -= sum(len(c) for c in parts)
        try:
            result = self._ingest(SignalColumns.concat(parts))
        except Exception as exc:  # every caller of the merged batch hears the same error
            return exc
        self.merged_batches += 1
        return result

    @staticmethod
    def _answer(
        taken: list[tuple[SignalColumns, asyncio.Future[IngestResult]]],
        result: IngestResult | Exception,
    ) -> None:
        if isinstance(result, Exception):
            for _, fut in taken:
                if not fut.done():
                    fut.set_exception(result)
            return
        rejected = sorted(result.rejected, key=lambda r: r.index)
        start, j = 0, 0
        for cols, fut in taken:
            end = start + len(cols)
            mine: list[RejectedItem] = []
            while j < len(rejected) and rejected[j].index < end:
                mine.append(rejected[j].model_copy(update={"index": rejected[j].index - start}))
                j += 1
            if not fut.done():
                fut.set_result(
                    IngestResult.model_construct(accepted=len(cols) - len(mine), rejected=mine)
                )
            start = end
