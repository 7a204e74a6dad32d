"""What each client method does, written once for the sync and the async client.

Every method is a generator (an "op") that yields the Ray calls it needs, as
``(fanout, calls)``, receives the gathered answers, and returns the method's result. The
sync client drives an op with ``Fanout.gather_sync``, the async client with ``await
Fanout.gather``; that is the only difference between them (sans-I/O, as h11 and
hyper-h2 do it). Signals go straight to the owning shards, like a Redis Cluster smart
client; selections, scores and predictions go through a router, which fans out and merges
(with ``fan_out="local"``, selections and scores run the router's own ops here instead).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from actors.client.answers import merge_register
from actors.client.relay import Relay
from actors.cluster import tracing
from actors.cluster.adapter import Fanout, Op, RayTransport
from actors.cluster.router import RouterCore
from actors.core.columns import SignalColumns, columns_from_arrays, columns_from_dicts
from actors.core.config import ServiceConfig
from actors.core.errors import Saturated
from actors.core.models import (
    AgentView,
    CompleteRequest,
    CompleteResult,
    DescribeRequest,
    IngestResult,
    OverloadPrediction,
    PredictParams,
    ScoresRequest,
    ScoresResult,
    SelectRequest,
    SelectResult,
    Weights,
    check_agent_id,
)
from actors.core.partition import owners, partition

WeightsArg = Weights | dict[str, float] | None
log = logging.getLogger(__name__)
FanOutMode = Literal["router", "local"]
_SYNC_POLL_S = 0.2  # the longest one blocking long-poll for headroom waits


def _weights(weights: WeightsArg) -> Weights | None:
    return Weights(**weights) if isinstance(weights, dict) else weights


def select_request(
    candidates: Sequence[str] | None = None,
    k: int = 1,
    weights: WeightsArg = None,
    **options: Any,
) -> SelectRequest:
    """The request a client's ``select(...)`` arguments make (validated)."""
    return SelectRequest.model_validate(
        {
            "candidates": None if candidates is None else list(candidates),
            "k": k,
            "weights": _weights(weights),
            **options,
        }
    )


class ClientOps:
    """The shared state and the ops of both clients."""

    def __init__(
        self,
        routers: Sequence[Any],
        shards: Sequence[Any],
        config: ServiceConfig,
        fan_out: FanOutMode = "router",
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
        # fan_out="local": selections and scores fan out from this process (one hop, not
        # two); its counters reach the routers as a Serve replica's do (pushed, counted
        # once), at most once a second on use and on ``flush_metrics``.
        if fan_out not in ("router", "local"):
            raise ValueError(f"fan_out must be 'router' or 'local', got {fan_out!r}")
        self._local = self.local_router() if fan_out == "local" else None
        self.source = f"client-{os.getpid()}-{os.urandom(4).hex()}"
        self.relay = Relay(self._shards, self._routers, len(self.router_handles), self.source)

    # ---------------------------------------------------------------- plumbing
    def _router_op(self, method: str, *args: Any) -> Op[Any]:
        j = next(self._router_cycle)
        got = yield self._routers, {j: (method, args)}
        return Fanout.one(got, j)

    def local_router(self) -> RouterCore:
        """A router in this process over the same shard fan-out (the logic the router
        actors run), for a caller that should not pay the hop through a router actor."""
        return RouterCore(self._shards, self.config)

    def push_metrics_op(self, source: str, router: RouterCore) -> Op[None]:
        """Give every router actor ``router``'s counters (``relay.Relay.push_op``)."""
        return self.relay.push_op(source, router)

    def flush_metrics_op(self) -> Op[None]:
        """With ``fan_out="local"``: push this client's selection counters now (before a
        scrape that must include them, or before the process ends)."""
        if self._local is not None:
            yield from self.relay.push_op(self.source, self._local)

    # ---------------------------------------------------------------- ops
    def register_columns_op(self, cols: SignalColumns) -> Op[IngestResult]:
        span = tracing.start("ripple.ingest", links=cols.trace_ids, signals=len(cols))
        parts = partition(cols.agent_ids, self.num_shards, self._owner)
        positions = {s: p for s, p in enumerate(parts) if len(p)}
        try:
            got = yield self._shards, {s: ("ingest", (cols.take(p),)) for s, p in positions.items()}
            out = merge_register(positions, got)
        except Exception:
            tracing.end(span, failed=True)
            raise
        tracing.end(span, shards=len(positions), accepted=out.accepted, rejected=len(out.rejected))
        return out

    def register_op(self, signals: Sequence[Any]) -> Op[IngestResult]:
        """Dicts or ``Signal`` models; per-item results, indices into ``signals``."""
        return (yield from self.register_columns_op(columns_from_dicts(signals)))

    def register_arrays_op(
        self, agent_ids: Sequence[Any], signal_types: Any, values: Any, **cols: Any
    ) -> Op[IngestResult]:
        columns = columns_from_arrays(agent_ids, signal_types, values, **cols)
        return (yield from self.register_columns_op(columns))

    def select_request_op(self, req: SelectRequest) -> Op[SelectResult]:
        if self._local is not None:
            picked = yield from self._local_select_op(req)
            self.relay.push_if_due(self._local)
            return picked
        # The router may hold it up to its wait: the call's deadline includes that.
        waits = Fanout(self._routers.transport, self._routers.deadline_s + self._wait_s(req))
        j = next(self._router_cycle)
        got = yield waits, {j: ("select", (req,))}
        result: SelectResult = Fanout.one(got, j)
        return result

    def _wait_s(self, req: SelectRequest) -> float:
        return min(req.wait_s, self.config.flow.max_wait_s) if req.assign else 0.0

    def _local_select_op(self, req: SelectRequest) -> Op[SelectResult]:
        """A selection from this process, waiting up to ``wait_s`` for headroom by
        long-polling the shards (``wait_capacity``). One blocking caller is a queue of
        one; the async client shares its router's flow-control queue instead
        (``AsyncRippleClient.select_request``)."""
        assert self._local is not None
        t0 = time.monotonic()
        deadline = t0 + self._wait_s(req)
        epochs: dict[int, int] = {}
        while True:
            try:
                picked = yield from self._local.select_op(req)
            except Saturated as refused:
                left = deadline - time.monotonic()
                if left <= 0:
                    refused.waited_s = round(time.monotonic() - t0, 6)
                    raise
                # Blocking, every shard's answer is awaited: a short poll bounds how
                # long a slot freed on one shard waits for the quiet others.
                # Its band, so a router holding a higher one binds a freed slot first.
                poll = (min(left, _SYNC_POLL_S), req.priority, self.config.flow.band_yield_s)
                calls = {
                    s: ("wait_capacity", (epochs.get(s, -1), *poll)) for s in range(self.num_shards)
                }
                got = yield self._shards, calls
                epochs.update(got.results)
                continue
            picked.waited_s = round(time.monotonic() - t0, 6)
            return picked

    def select_op(
        self,
        candidates: Sequence[str] | None = None,
        k: int = 1,
        weights: WeightsArg = None,
        **options: Any,
    ) -> Op[SelectResult]:
        return (
            yield from self.select_request_op(select_request(candidates, k, weights, **options))
        )

    def scores_request_op(self, req: ScoresRequest) -> Op[ScoresResult]:
        if self._local is not None:
            return (yield from self._local.scores_op(req))
        result: ScoresResult = yield from self._router_op("scores", req)
        return result

    def scores_op(self, agent_ids: Sequence[str], weights: WeightsArg = None) -> Op[ScoresResult]:
        req = ScoresRequest(agent_ids=list(agent_ids), weights=_weights(weights))
        return (yield from self.scores_request_op(req))

    def explain_op(self, assignment_id: str) -> Op[dict[str, Any]]:
        """Why this assignment went where it went: its decision record (DESIGN §4)."""
        if self._local is not None:
            return (yield from self._local.decision_op(assignment_id))
        result: dict[str, Any] = yield from self._router_op("decision", assignment_id)
        return result

    def agent_op(self, agent_id: str) -> Op[AgentView]:
        result: AgentView = yield from self._router_op("agent", agent_id)
        return result

    def delete_op(self, agent_id: str) -> Op[bool]:
        return bool((yield from self._router_op("delete", agent_id)))

    def complete_op(
        self,
        agent_id: str,
        assignment_id: str | None = None,
        ok: bool = True,
        duration_s: float | None = None,
    ) -> Op[CompleteResult]:
        """A task assigned by ``select`` ended; its agent's load estimate drops now."""
        req = CompleteRequest(assignment_id=assignment_id, ok=ok, duration_s=duration_s)
        result: CompleteResult = yield from self._router_op(
            "complete", agent_id, req.assignment_id, req.ok, req.duration_s
        )
        return result

    def report_tasks_op(
        self,
        assigned: Sequence[str] = (),
        completed: Sequence[tuple[str, bool, float | None]] = (),
    ) -> Op[dict[str, int]]:
        """For routers that choose agents themselves: record the tasks they sent
        (``assigned``, one id per task) and those that ended (``(agent_id, ok,
        duration_s)``), in one call per owning shard rather than one per task."""
        for a in assigned:
            check_agent_id(a)
        done = []
        for a, ok, duration_s in completed:
            check_agent_id(a)
            req = CompleteRequest(ok=ok, duration_s=duration_s)
            done.append((a, req.ok, req.duration_s))
        by_shard: dict[int, tuple[list[str], list[tuple[str, bool, float | None]]]] = {}
        for a, s in zip(
            assigned, owners(assigned, self.num_shards, self._owner).tolist(), strict=True
        ):
            by_shard.setdefault(s, ([], []))[0].append(a)
        ids = [a for a, _, _ in done]
        for item, s in zip(done, owners(ids, self.num_shards, self._owner).tolist(), strict=True):
            by_shard.setdefault(s, ([], []))[1].append(item)
        got = yield self._shards, {s: ("report_tasks", parts) for s, parts in by_shard.items()}
        # Soft state: a shard that missed this report is reconciled by the next LOAD
        # signal, so the answer says how much was recorded rather than failing it all.
        self._shards.all_ok(got)
        return {
            "assigned": sum(r["assigned"] for r in got.results.values()),
            "released": sum(r["released"] for r in got.results.values()),
            "shards_missed": len(got.failures),
        }

    def describe_op(
        self,
        agent_id: str,
        max_concurrency: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> Op[AgentView]:
        """Set an agent's metadata (no TTL; omitted fields are kept)."""
        req = DescribeRequest(max_concurrency=max_concurrency, labels=labels)
        check_agent_id(agent_id)
        result: AgentView = yield from self._router_op(
            "describe_agent", agent_id, req.max_concurrency, req.labels
        )
        return result

    def predict_overload_op(
        self, agent_id: str, horizon_s: float = 60.0, threshold: float = 0.8
    ) -> Op[OverloadPrediction]:
        params = PredictParams(horizon_s=horizon_s, threshold=threshold)
        result: OverloadPrediction = yield from self._router_op("predict", agent_id, params)
        return result

    def overloads_request_op(
        self, params: PredictParams, cursor: str | None = None, limit: int = 1000
    ) -> Op[dict[str, Any]]:
        """One page; pass its ``next_cursor`` back for the next (None: the last page)."""
        result: dict[str, Any] = yield from self._router_op("overloads", params, cursor, limit)
        return result

    def overloads_op(
        self,
        horizon_s: float = 60.0,
        threshold: float = 0.8,
        min_probability: float = 0.5,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Op[dict[str, Any]]:
        params = PredictParams(
            horizon_s=horizon_s, threshold=threshold, min_probability=min_probability
        )
        return (yield from self.overloads_request_op(params, cursor, limit))

    def checkpoint_op(self) -> Op[dict[int, Any]]:
        """Every shard takes a snapshot now (a clean stop does this first, so the next
        start replays no WAL); per shard, what it did, or why it could not."""
        got = yield self._shards, {s: ("checkpoint", ()) for s in range(self.num_shards)}
        return {
            s: got.results[s] if s in got.results else {"error": str(got.failures.get(s))}
            for s in range(self.num_shards)
        }

    def stats_op(self) -> Op[dict[str, Any]]:
        result: dict[str, Any] = yield from self._router_op("stats")
        return result

    def metrics_snapshot_op(self) -> Op[dict[str, Any]]:
        """The whole cluster's counters (``relay.Relay.snapshot_op``)."""
        return self.relay.snapshot_op()
