"""The shard actor: a thin async shell over ``ShardState``.

It adds only what an actor must: the periodic expiry sweep, the ingest lane (writes are
coalesced and never make a read wait behind a backlog), and one event loop so the core,
which is not thread-safe, is touched by one coroutine at a time. Every call into the core
is synchronous CPU work, so no coroutine awaits in the middle of changing state.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Any

from actors.cluster.adapter import PickledCalls, node_id, was_restarted
from actors.cluster.durability import ShardDurability
from actors.cluster.ingest_lane import IngestLane
from actors.core.columns import SignalColumns
from actors.core.config import DurabilityConfig, ShardConfig
from actors.core.errors import StorageUnavailable, Unavailable
from actors.core.merge import Partial
from actors.core.metrics import Counters
from actors.core.models import (
    AgentScore,
    AgentView,
    CompleteResult,
    IngestResult,
    OverloadPrediction,
    PredictParams,
    SelectRequest,
    Weights,
)
from actors.core.state import ShardState

log = logging.getLogger(__name__)


def rss_bytes() -> int:
    """Resident memory of this process (Linux), for the memory benchmark."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class ShardActor(PickledCalls):
    def __init__(
        self,
        shard_index: int,
        config: ShardConfig,
        log_level: str = "INFO",
        durability: DurabilityConfig | None = None,
        namespace: str = "ripple",
    ) -> None:
        logging.basicConfig(level=log_level)
        self.shard_index = shard_index
        self.restarted = was_restarted()
        # The constructor is the restore: Ray delivers no call before it returns, so the
        # shard answers nothing (and /readyz says 503) until its state is back.
        self.durable: ShardDurability | None = None
        if durability is not None and durability.mode != "none":
            self.durable = ShardDurability(durability, shard_index, namespace)
            self.state = self.durable.restore(config)
            self.durable.adopt = self._adopt
        else:
            self.state = ShardState(config)
        gate = None if self.durable is None else self.durable.writes_open.wait
        commit = self.durable.commit if self.durable and self.durable.sync_each_write else None
        self.lane = IngestLane(
            lambda cols: self.state.ingest(cols),  # the state, even once rebuilt
            max_queued_signals=config.max_queued_signals,
            before_apply=gate,
            after_apply=commit,
        )
        # Late binding (``actors.core.admission``): routers with waiting selections
        # long-poll ``wait_capacity``; any call that may free a slot wakes them.
        self._epoch_seen = self.state.capacity_epoch
        # Resolved, when the epoch moves, with the highest priority band a router polling
        # then had waiting; the bands of the polls outstanding now, counted.
        self._woken: asyncio.Future[int] | None = None
        self._polling: Counter[int] = Counter()
        self._sweeper: asyncio.Task[None] | None = None
        self._durability_task: asyncio.Task[None] | None = None
        self.sweeps = 0
        self.failed_sweeps = 0
        if self.restarted and self.durable is None:
            log.warning(
                "shard %d restarted (pid %d) without durability: its state starts empty",
                shard_index,
                os.getpid(),
            )

    def _adopt(self, state: ShardState) -> None:
        """The state rebuilt from disk after a failed fsync took back unsynced changes."""
        self.state = state

    async def _writable(self) -> None:
        """Wait while a snapshot copies the arrays this write would change."""
        if self.durable is not None:
            await self.durable.writes_open.wait()

    async def _commit(self) -> None:
        """With fsync always, return once this change's WAL record is on disk."""
        if self.durable is not None:
            await self.durable.commit()

    async def call(self, method: str, blob: bytes) -> bytes:
        out = await super().call(method, blob)
        self._wake_if_freed()
        return out

    def _wake_if_freed(self) -> None:
        epoch = self.state.capacity_epoch
        if epoch != self._epoch_seen:
            self._epoch_seen = epoch
            if self._woken is not None:
                if not self._woken.done():
                    self._woken.set_result(max(self._polling, default=-1))
                self._woken = None

    async def wait_capacity(
        self, seen: int, timeout_s: float, band: int = -1, yield_s: float = 0.0
    ) -> int:
        """A long-poll: return the capacity epoch as soon as it differs from ``seen`` (a
        slot may have freed), or after ``timeout_s``. ``band``: the highest priority band
        the polling router has waiting. When the epoch moves, a poll whose band is below
        the highest polling then returns ``yield_s`` later, so the router holding the
        higher band binds first: priority holds across routers, not only within one
        (each assignment is still admitted here, so a router that comes late finds the
        slot taken and waits on)."""
        self._ensure_sweeper()
        self._wake_if_freed()
        if self.state.capacity_epoch == seen:
            if self._woken is None:
                self._woken = asyncio.get_running_loop().create_future()
            woken = self._woken
            self._polling[band] += 1
            try:
                top = await asyncio.wait_for(asyncio.shield(woken), timeout_s)
            except TimeoutError:
                top = -1
            finally:
                self._polling[band] -= 1
                if not self._polling[band]:
                    del self._polling[band]
            if band < top and yield_s > 0:
                await asyncio.sleep(yield_s)
        return self.state.capacity_epoch

    def _ensure_sweeper(self) -> None:
        # Created lazily: the constructor does not run inside the actor's event loop.
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep_forever())
        if self.durable is not None and (
            self._durability_task is None or self._durability_task.done()
        ):
            self._durability_task = loop.create_task(self.durable.run(lambda: self.state))

    async def _sweep_forever(self) -> None:
        interval = self.state.config.sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self._writable()
                self.state.sweep()
                self.sweeps += 1
                self._wake_if_freed()
            except StorageUnavailable:  # not applied; the storage's state is reported
                self.failed_sweeps += 1
            except Exception:  # a failed sweep must not stop future ones, nor go unseen
                self.failed_sweeps += 1
                log.exception("shard %d: expiry sweep failed", self.shard_index)

    async def ping(self) -> dict[str, Any]:
        self._ensure_sweeper()
        return {
            "shard": self.shard_index,
            "pid": os.getpid(),
            "agents": len(self.state),
            "rss_bytes": rss_bytes(),
            "node_id": node_id(),
        }

    async def ingest(self, cols: SignalColumns) -> IngestResult:
        self._ensure_sweeper()
        try:
            return await self.lane.submit(cols)
        except Unavailable as exc:
            reason = "storage" if isinstance(exc, StorageUnavailable) else "overloaded"
            self.state.metrics.record_rejected(reason, len(cols))
            raise

    async def partial_select(self, req: SelectRequest) -> Partial:
        self._ensure_sweeper()
        return self.state.partial_select(req)

    async def assign(
        self,
        agent_ids: list[str],
        admit: bool = False,
        record: dict[str, Any] | None = None,
        affinity: tuple[str, str] | None = None,
    ) -> dict[str, str]:
        out = self.state.assign(agent_ids, admit=admit, record=record, affinity=affinity)
        await self._commit()
        return out

    async def report_tasks(
        self, assigned: list[str], completed: list[tuple[str, bool, float | None]]
    ) -> dict[str, int]:
        out = self.state.report_tasks(assigned, completed)
        await self._commit()
        return out

    async def complete(
        self, agent_id: str, assignment_id: str | None, ok: bool, duration_s: float | None
    ) -> CompleteResult:
        out = self.state.complete(agent_id, assignment_id, ok, duration_s)
        await self._commit()
        return out

    async def describe_agent(
        self, agent_id: str, max_concurrency: int | None, labels: dict[str, str] | None
    ) -> AgentView:
        await self._writable()
        out = self.state.describe(agent_id, max_concurrency, labels)
        await self._commit()
        return out

    async def scores(self, agent_ids: list[str], weights: Weights | None) -> dict[str, AgentScore]:
        return self.state.scores(agent_ids, weights)

    async def decision(self, assignment_id: str) -> dict[str, Any] | None:
        return self.state.decision(assignment_id)

    async def agent(self, agent_id: str) -> AgentView:
        return self.state.agent(agent_id)

    async def delete(self, agent_id: str) -> bool:
        await self._writable()
        out = self.state.delete(agent_id)
        await self._commit()
        return out

    async def predict(self, agent_id: str, params: PredictParams) -> OverloadPrediction:
        return self.state.predict(agent_id, params)

    async def overloads_page(
        self, params: PredictParams, start_row: int, limit: int, budget_s: float
    ) -> tuple[list[OverloadPrediction], int | None]:
        """A page of overloads, scanned in chunks that yield to the event loop between
        them, so selections and ingest go on meanwhile; bounded by ``budget_s``."""
        out: tuple[list[OverloadPrediction], int | None] = ([], start_row)
        state = self.state
        for step in state.scan.steps(params, start_row, limit, budget_s, state.now):
            out = step
            await asyncio.sleep(0)
        return out

    async def checkpoint(self) -> dict[str, Any]:
        """Take a snapshot now (a clean stop does, so the next start replays no WAL)."""
        if self.durable is None:
            return {"skipped": "durability is off"}
        return await self.durable.snapshot(self.state)

    async def stats(self) -> dict[str, Any]:
        self._ensure_sweeper()
        return {
            "shard": self.shard_index,
            **self.state.stats(),
            "pid": os.getpid(),
            "node_id": node_id(),
            "restarted": self.restarted,
            "sweeps": self.sweeps,
            "failed_sweeps": self.failed_sweeps,
            "queued_signals": self.lane.queued_signals,
            "refused_signals": self.lane.refused_signals,
            "merged_batches": self.lane.merged_batches,
            "durability": None if self.durable is None else self.durable.stats(),
        }

    async def counters(self) -> Counters:
        return self.state.counters()
