"""The shard actor: a thin async shell over ``ShardState``.

It adds only what an actor must: the periodic expiry sweep, the ingest lane (writes are
coalesced and never make a read wait behind a backlog), and one event loop so the core,
which is not thread-safe, is touched by one coroutine at a time. Every call into the core
is synchronous CPU work, so no coroutine awaits in the middle of changing state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from actors.columns import SignalColumns
from actors.config import ShardConfig
from actors.core_metrics import MetricsSnapshot
from actors.ingest_lane import IngestLane
from actors.models import (
    AgentScore,
    AgentView,
    IngestResult,
    OverloadPrediction,
    PredictParams,
    SelectRequest,
    Weights,
)
from actors.selection import Partial
from actors.shard_state import ShardState


def _node_id() -> str | None:
    """The Ray node this actor runs on (None outside Ray), so placement can be checked."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return None


def rss_bytes() -> int:
    """Resident memory of this process (Linux), for the memory benchmark."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class ShardActor:
    def __init__(self, shard_index: int, config: ShardConfig) -> None:
        self.shard_index = shard_index
        self.state = ShardState(config)
        self.lane = IngestLane(self.state.ingest)
        self._sweeper: asyncio.Task[None] | None = None
        self.sweeps = 0

    def _ensure_sweeper(self) -> None:
        # Created lazily: the constructor does not run inside the actor's event loop.
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        interval = self.state.config.sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a failed sweep must not stop future ones
                self.state.sweep()
                self.sweeps += 1

    async def ping(self) -> dict[str, Any]:
        self._ensure_sweeper()
        return {
            "shard": self.shard_index,
            "pid": os.getpid(),
            "agents": len(self.state),
            "rss_bytes": rss_bytes(),
            "node_id": _node_id(),
        }

    async def register(self, cols: SignalColumns) -> IngestResult:
        self._ensure_sweeper()
        return await self.lane.submit(cols)

    async def partial_select(self, req: SelectRequest) -> Partial:
        self._ensure_sweeper()
        return self.state.partial_select(req)

    async def select(self, req: SelectRequest) -> Any:
        return self.state.select(req)

    async def reserve(self, agent_ids: list[str]) -> list[bool]:
        return self.state.reserve(agent_ids)

    async def scores(self, agent_ids: list[str], weights: Weights | None) -> dict[str, AgentScore]:
        return self.state.scores(agent_ids, weights)

    async def agent(self, agent_id: str) -> AgentView:
        return self.state.agent(agent_id)

    async def delete(self, agent_id: str) -> bool:
        return self.state.delete(agent_id)

    async def predict(self, agent_id: str, params: PredictParams) -> OverloadPrediction:
        return self.state.predict(agent_id, params)

    async def overloads(self, params: PredictParams) -> list[OverloadPrediction]:
        return self.state.overloads(params)

    async def sweep(self) -> dict[str, int]:
        return self.state.sweep()

    async def stats(self) -> dict[str, int]:
        self._ensure_sweeper()
        return {"shard": self.shard_index, **self.state.stats()}

    async def metrics(self) -> MetricsSnapshot:
        return self.state.metrics_snapshot()

    async def snapshot(self) -> bytes:
        return self.state.snapshot()


class NullShard:
    """The benchmark ceiling: accepts the same batches and does nothing with them."""

    def __init__(self, shard_index: int = 0, config: ShardConfig | None = None) -> None:
        self.shard_index = shard_index

    async def ping(self) -> dict[str, Any]:
        return {"shard": self.shard_index, "pid": os.getpid(), "agents": 0}

    async def register(self, cols: SignalColumns) -> IngestResult:
        return IngestResult.model_construct(accepted=len(cols), rejected=[])
