"""The sync and async clients: ``actors.connect()`` and ``actors.connect_async()``.

Both expose the same methods with the same signatures; each method is the shared op of
``actors.client.ops`` driven by ``_run`` (blocking) or ``_arun`` (awaiting).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from actors.client.buffer import SignalBuffer
from actors.client.ops import ClientOps, FanOutMode, Op, WeightsArg, select_request
from actors.cluster.adapter import drive, drive_sync
from actors.cluster.deployment import deploy_actors, locate
from actors.core.config import ServiceConfig
from actors.core.models import SelectRequest, SelectResult

P = ParamSpec("P")
T = TypeVar("T")


def _sync(op: Callable[Concatenate[ClientOps, P], Op[T]]) -> Callable[Concatenate[Any, P], T]:
    def method(self: RippleClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self, *args, **kwargs))

    method.__doc__ = op.__doc__
    return method


def _async(
    op: Callable[Concatenate[ClientOps, P], Op[T]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncRippleClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._arun(op(self, *args, **kwargs))

    method.__doc__ = op.__doc__
    return method


class RippleClient(ClientOps):
    """Blocking client, for drivers, tasks and threads."""

    def _run(self, op: Op[T]) -> T:
        return drive_sync(op)

    register = _sync(ClientOps.register_op)
    register_arrays = _sync(ClientOps.register_arrays_op)
    register_columns = _sync(ClientOps.register_columns_op)
    select = _sync(ClientOps.select_op)
    select_request = _sync(ClientOps.select_request_op)
    scores = _sync(ClientOps.scores_op)
    scores_request = _sync(ClientOps.scores_request_op)
    agent = _sync(ClientOps.agent_op)
    explain = _sync(ClientOps.explain_op)
    delete = _sync(ClientOps.delete_op)
    complete = _sync(ClientOps.complete_op)
    report_tasks = _sync(ClientOps.report_tasks_op)
    describe = _sync(ClientOps.describe_op)
    predict_overload = _sync(ClientOps.predict_overload_op)
    overloads = _sync(ClientOps.overloads_op)
    overloads_request = _sync(ClientOps.overloads_request_op)
    checkpoint = _sync(ClientOps.checkpoint_op)
    stats = _sync(ClientOps.stats_op)
    metrics_snapshot = _sync(ClientOps.metrics_snapshot_op)
    push_metrics = _sync(ClientOps.push_metrics_op)
    flush_metrics = _sync(ClientOps.flush_metrics_op)

    def buffer(
        self, max_batch: int = 1_000, flush_interval_s: float = 0.05, max_pending: int = 100_000
    ) -> SignalBuffer:
        def send(batch: list[Any]) -> tuple[int, list[Any]]:
            result = self.register(batch)
            return result.accepted, result.rejected

        return SignalBuffer(send, max_batch, flush_interval_s, max_pending)


class AsyncRippleClient(ClientOps):
    """``async`` client, for async actors, Serve replicas and asyncio programs."""

    async def _arun(self, op: Op[T]) -> T:
        return await drive(op)

    register = _async(ClientOps.register_op)
    register_arrays = _async(ClientOps.register_arrays_op)
    register_columns = _async(ClientOps.register_columns_op)

    async def select_request(self, req: SelectRequest) -> SelectResult:
        """With ``fan_out="local"``, selections wait in this process's router's
        flow-control queue (shared by every coroutine using this client)."""
        if self._local is None:
            return await self._arun(self.select_request_op(req))
        picked = await self._local.select(req)
        self.relay.push_if_due(self._local)
        return picked

    async def select(
        self,
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: WeightsArg = None,
        **options: Any,
    ) -> SelectResult:
        return await self.select_request(select_request(candidates, k, weights, **options))

    def flow_status(self) -> dict[str, object] | None:
        """With ``fan_out="local"``: this process's flow-control queue as of now (waiting
        selections by band, refusals by reason, the tenants' fairness index), what
        ``/v1/stats`` shows of a Serve replica's; its gauges reach ``/metrics`` only when
        the counters are pushed. None when selections wait in the router actors."""
        return None if self._local is None else self._local.flow.summary()

    scores = _async(ClientOps.scores_op)
    scores_request = _async(ClientOps.scores_request_op)
    agent = _async(ClientOps.agent_op)
    explain = _async(ClientOps.explain_op)
    delete = _async(ClientOps.delete_op)
    complete = _async(ClientOps.complete_op)
    report_tasks = _async(ClientOps.report_tasks_op)
    describe = _async(ClientOps.describe_op)
    predict_overload = _async(ClientOps.predict_overload_op)
    overloads = _async(ClientOps.overloads_op)
    overloads_request = _async(ClientOps.overloads_request_op)
    checkpoint = _async(ClientOps.checkpoint_op)
    stats = _async(ClientOps.stats_op)
    metrics_snapshot = _async(ClientOps.metrics_snapshot_op)
    push_metrics = _async(ClientOps.push_metrics_op)
    flush_metrics = _async(ClientOps.flush_metrics_op)


def connect(
    namespace: str = "ripple",
    address: str | None = None,
    timeout_s: float = 10.0,
    fan_out: FanOutMode = "router",
) -> RippleClient:
    """Attach to a running deployment by name, from a driver, a task or another job.

    ``fan_out="local"``: selections and scores go from this process straight to the
    shards, one actor hop instead of two (a router actor's work, done here); its counters
    are pushed to the routers at most once a second, and by ``flush_metrics()``."""
    return RippleClient(*locate(namespace, address, timeout_s), fan_out=fan_out)


def connect_async(
    namespace: str = "ripple",
    address: str | None = None,
    timeout_s: float = 10.0,
    fan_out: FanOutMode = "router",
) -> AsyncRippleClient:
    return AsyncRippleClient(*locate(namespace, address, timeout_s), fan_out=fan_out)


def deploy(
    config: ServiceConfig | None = None, address: str | None = None, **overrides: Any
) -> RippleClient:
    """Create the shards and routers of ``config`` idempotently; a connected client."""
    deployed = deploy_actors(config, address, **overrides)
    return connect(namespace=deployed.namespace)


def wait_until_ready(client: RippleClient, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll stats until every shard answers (after a restart, say)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = client.stats()
        if stats["ready"] or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)
