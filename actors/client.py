"""Python client for Ray workloads: ``actors.connect()`` and ``actors.connect_async()``.

Signals go straight to the owning shards (like a Redis Cluster smart client): the client
caches the shard map, partitions each batch by the stable hash, and sends one call per
shard in parallel. Selections, scores and predictions go through a router, which fans
out and merges. Sync and async clients share the planning and merging code below.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from actors.buffer import SignalBuffer
from actors.columns import SignalColumns, columns_from_arrays, columns_from_dicts
from actors.config import ServiceConfig
from actors.deployment import ROUTER_NAME, SHARD_NAME, ensure_ray, require_router
from actors.errors import DeadlineExceeded, NotDeployed
from actors.models import (
    AgentView,
    IngestResult,
    OverloadPrediction,
    PredictParams,
    RejectedItem,
    ScoresRequest,
    ScoresResult,
    SelectRequest,
    SelectResult,
    Weights,
)
from actors.partition import partition
from actors.ray_adapter import Fanout, Gathered, RayTransport

Calls = dict[int, tuple[str, tuple[Any, ...]]]


def find_actor_names(namespace: str) -> list[str]:
    import ray

    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in named
        if a.get("namespace") == namespace and a["name"].startswith("ripple-")
    )


def _weights(weights: Weights | dict[str, float] | None) -> Weights | None:
    return Weights(**weights) if isinstance(weights, dict) else weights


class _ClientBase:
    def __init__(
        self, routers: Sequence[Any], shards: Sequence[Any], config: ServiceConfig
    ) -> None:
        self.config = config
        self.num_shards = len(shards)
        self.router_handles = list(routers)
        self.shard_handles = list(shards)
        self._shards = Fanout(RayTransport(shards), config.shard_deadline_s)
        # The router itself waits up to a shard deadline; give it room to answer degraded.
        self._routers = Fanout(RayTransport(routers), config.shard_deadline_s * 2 + 1.0)
        self._router_cycle = itertools.cycle(range(len(routers)))
        self._owner: dict[str, int] = {}

    # ---------------------------------------------------------------- ingest planning
    def _plan_register(self, cols: SignalColumns) -> tuple[Calls, dict[int, np.ndarray]]:
        parts = partition(cols.agent_ids, self.num_shards, self._owner)
        positions = {s: p for s, p in enumerate(parts) if len(p)}
        calls: Calls = {s: ("register", (cols.take(p),)) for s, p in positions.items()}
        return calls, positions

    @staticmethod
    def _merge_register(positions: dict[int, np.ndarray], got: Gathered) -> IngestResult:
        accepted = 0
        rejected: list[RejectedItem] = []
        for s, pos in positions.items():
            res = got.results.get(s)
            if res is None:  # the owner is down: nothing of its share was applied
                why = got.failures.get(s, "shard unavailable")
                rejected.extend(
                    RejectedItem(index=int(p), field=None, error=f"shard {s} unavailable: {why}")
                    for p in pos.tolist()
                )
                continue
            accepted += res.accepted
            rejected.extend(
                RejectedItem(index=int(pos[r.index]), field=r.field, error=r.error)
                for r in res.rejected
            )
        rejected.sort(key=lambda r: r.index)
        return IngestResult.model_construct(accepted=accepted, rejected=rejected)

    def _route(self, method: str, *args: Any) -> tuple[int, Calls]:
        j = next(self._router_cycle)
        return j, {j: (method, args)}


class RippleClient(_ClientBase):
    """Blocking client, for drivers, tasks and threads."""

    def register(self, signals: Sequence[Any]) -> IngestResult:
        """Dicts or ``Signal`` models; per-item results, indices into ``signals``."""
        return self.register_columns(columns_from_dicts(signals))

    def register_arrays(
        self, agent_ids: Sequence[Any], signal_types: Any, values: Any, **cols: Any
    ) -> IngestResult:
        return self.register_columns(columns_from_arrays(agent_ids, signal_types, values, **cols))

    def register_columns(self, cols: SignalColumns) -> IngestResult:
        calls, positions = self._plan_register(cols)
        return self._merge_register(positions, self._shards.gather_sync(calls))

    def _call(self, method: str, *args: Any) -> Any:
        j, calls = self._route(method, *args)
        return Fanout.one(self._routers.gather_sync(calls), j)

    def select(
        self,
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: Weights | dict[str, float] | None = None,
        **options: Any,
    ) -> SelectResult:
        req = SelectRequest(candidates=candidates, k=k, weights=_weights(weights), **options)
        result: SelectResult = self._call("select", req)
        return result

    def select_request(self, req: SelectRequest) -> SelectResult:
        result: SelectResult = self._call("select", req)
        return result

    def scores(
        self, agent_ids: Sequence[str], weights: Weights | dict[str, float] | None = None
    ) -> ScoresResult:
        result: ScoresResult = self._call(
            "scores", ScoresRequest(agent_ids=list(agent_ids), weights=_weights(weights))
        )
        return result

    def agent(self, agent_id: str) -> AgentView:
        result: AgentView = self._call("agent", agent_id)
        return result

    def delete(self, agent_id: str) -> bool:
        return bool(self._call("delete", agent_id))

    def predict_overload(
        self, agent_id: str, horizon_s: float = 60.0, threshold: float = 0.8
    ) -> OverloadPrediction:
        result: OverloadPrediction = self._call(
            "predict", agent_id, PredictParams(horizon_s=horizon_s, threshold=threshold)
        )
        return result

    def overloads(
        self, horizon_s: float = 60.0, threshold: float = 0.8, min_probability: float = 0.5
    ) -> dict[str, Any]:
        params = PredictParams(
            horizon_s=horizon_s, threshold=threshold, min_probability=min_probability
        )
        result: dict[str, Any] = self._call("overloads", params)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("stats")
        return result

    def metrics_snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("metrics_snapshot")
        return result

    def buffer(
        self, max_batch: int = 1_000, flush_interval_s: float = 0.05, max_pending: int = 100_000
    ) -> SignalBuffer:
        def send(batch: list[Any]) -> tuple[int, list[Any]]:
            result = self.register(batch)
            return result.accepted, result.rejected

        return SignalBuffer(send, max_batch, flush_interval_s, max_pending)


class AsyncRippleClient(_ClientBase):
    """``async`` client, for async actors, Serve replicas and asyncio programs."""

    async def register(self, signals: Sequence[Any]) -> IngestResult:
        return await self.register_columns(columns_from_dicts(signals))

    async def register_arrays(
        self, agent_ids: Sequence[Any], signal_types: Any, values: Any, **cols: Any
    ) -> IngestResult:
        return await self.register_columns(
            columns_from_arrays(agent_ids, signal_types, values, **cols)
        )

    async def register_columns(self, cols: SignalColumns) -> IngestResult:
        calls, positions = self._plan_register(cols)
        return self._merge_register(positions, await self._shards.gather(calls))

    async def _call(self, method: str, *args: Any) -> Any:
        j, calls = self._route(method, *args)
        return Fanout.one(await self._routers.gather(calls), j)

    async def select(
        self,
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: Weights | dict[str, float] | None = None,
        **options: Any,
    ) -> SelectResult:
        req = SelectRequest(candidates=candidates, k=k, weights=_weights(weights), **options)
        return await self.select_request(req)

    async def select_request(self, req: SelectRequest) -> SelectResult:
        result: SelectResult = await self._call("select", req)
        return result

    async def scores_request(self, req: ScoresRequest) -> ScoresResult:
        result: ScoresResult = await self._call("scores", req)
        return result

    async def scores(
        self, agent_ids: Sequence[str], weights: Weights | dict[str, float] | None = None
    ) -> ScoresResult:
        return await self.scores_request(
            ScoresRequest(agent_ids=list(agent_ids), weights=_weights(weights))
        )

    async def agent(self, agent_id: str) -> AgentView:
        result: AgentView = await self._call("agent", agent_id)
        return result

    async def delete(self, agent_id: str) -> bool:
        return bool(await self._call("delete", agent_id))

    async def predict_overload(
        self, agent_id: str, horizon_s: float = 60.0, threshold: float = 0.8
    ) -> OverloadPrediction:
        result: OverloadPrediction = await self._call(
            "predict", agent_id, PredictParams(horizon_s=horizon_s, threshold=threshold)
        )
        return result

    async def overloads_request(self, params: PredictParams) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("overloads", params)
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("stats")
        return result

    async def metrics_snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("metrics_snapshot")
        return result


def _locate(
    namespace: str, address: str | None, timeout_s: float
) -> tuple[list[Any], list[Any], ServiceConfig]:
    import ray

    ensure_ray(address)
    router = require_router(namespace)
    try:
        info = ray.get(router.describe.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError as exc:
        raise DeadlineExceeded(
            f"router in {namespace!r} did not answer in {timeout_s:g} s"
        ) from exc
    config = ServiceConfig.model_validate(info["config"])
    try:
        shards = [
            ray.get_actor(SHARD_NAME.format(index=i), namespace=namespace)
            for i in range(info["num_shards"])
        ]
        routers = [
            ray.get_actor(ROUTER_NAME.format(index=j), namespace=namespace)
            for j in range(config.num_routers)
        ]
    except ValueError as exc:
        raise NotDeployed(f"Ripple in {namespace!r} is only partly deployed: {exc}") from exc
    return routers, shards, config


def connect(
    namespace: str = "ripple", address: str | None = None, timeout_s: float = 10.0
) -> RippleClient:
    """Attach to a running deployment by name, from a driver, a task or another job."""
    return RippleClient(*_locate(namespace, address, timeout_s))


def connect_async(
    namespace: str = "ripple", address: str | None = None, timeout_s: float = 10.0
) -> AsyncRippleClient:
    return AsyncRippleClient(*_locate(namespace, address, timeout_s))


def wait_until_ready(client: RippleClient, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll stats until every shard answers (after a restart, say)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = client.stats()
        if stats["ready"] or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)
