"""The router: fans selections out to the shards and merges their top candidates.

``RouterCore`` holds all the logic and talks to shards only through ``Fanout``, so unit
tests run it over fake shards. ``RouterActor`` is the thin Ray actor around it. Ingest
does not pass through here: clients send signals straight to the owning shards.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from actors.cluster import tracing
from actors.cluster.adapter import Fanout, Gathered, Op, PickledCalls, drive, node_id
from actors.cluster.waiting import FlowControl
from actors.core import decisions
from actors.core.admission import saturated
from actors.core.affinity import claim
from actors.core.config import ServiceConfig
from actors.core.errors import InvalidInput, NotFound, Unavailable
from actors.core.merge import Partial, merge_partials
from actors.core.metric_sources import PushedCounters
from actors.core.metrics import Counters
from actors.core.models import (
    AgentView,
    CompleteResult,
    OverloadPrediction,
    PredictParams,
    ScoresRequest,
    ScoresResult,
    SelectRequest,
    SelectResult,
)
from actors.core.partition import partition, shard_of

log = logging.getLogger(__name__)
# Times a selection chooses again when other routers filled all its picks first.
_RACES = 3


class RouterCore:
    def __init__(self, fanout: Fanout, config: ServiceConfig, seed: int | None = None) -> None:
        self.fanout = fanout
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.metrics = Counters()
        # Selections with no headroom wait here (DESIGN §4, "Admission and flow control").
        self.flow = FlowControl(self.select_once, fanout, config.flow, self.metrics)
        # Counters pushed by routers that live elsewhere (a Serve replica fanning out
        # itself), latest per source: every scrape through any router sees them all.
        self.pushed = PushedCounters()

    @property
    def num_shards(self) -> int:
        return self.fanout.num_shards

    def _owner(self, agent_id: str) -> int:
        return shard_of(agent_id, self.num_shards)

    def _select_calls(self, req: SelectRequest) -> dict[int, tuple[str, tuple[Any, ...]]]:
        if req.candidates is None:
            return {s: ("partial_select", (req,)) for s in range(self.num_shards)}
        cands = req.candidates
        calls = {}
        for s, pos in enumerate(partition(cands, self.num_shards)):
            if len(pos):
                sub = req.model_copy(update={"candidates": [cands[i] for i in pos.tolist()]})
                calls[s] = ("partial_select", (sub,))
        return calls

    def select_op(
        self, req: SelectRequest, waited_s: float = 0.0, parent: Any = None
    ) -> Op[SelectResult]:
        """The selection without waiting, as an op (``actors.cluster.adapter.Op``): the
        router actor and a Serve replica drive it awaiting, the sync client blocking.
        An assigning selection that finds no candidate with headroom raises
        ``Saturated`` (waiting is ``select``'s, in the flow-control queue). One whose
        picks were all filled by other routers between its two steps chooses again.
        ``parent``: the caller's trace context (``tracing``)."""
        t0 = time.perf_counter()
        root = tracing.start(
            "ripple.select",
            parent,
            strategy=req.strategy,
            k=req.k,
            assign=req.assign,
            tenant=req.tenant,
            priority=req.priority,
            waited_s=waited_s,
        )
        result: SelectResult | None = None
        try:
            for attempt in range(_RACES):
                calls = self._select_calls(req)
                spans = {s: tracing.child("ripple.shard", root, shard=s) for s in calls}
                got = yield self.fanout, calls
                for s, span in spans.items():
                    tracing.end(span, answered=s in got.results)
                self.fanout.all_ok(got)
                merging = tracing.child("ripple.merge", root)
                parts: list[Partial] = [got.results[s] for s in sorted(got.results)]
                result, chosen = merge_partials(
                    parts, req, self.rng, shards_answered=got.answered, shards_total=got.asked
                )
                tracing.end(merging, candidates=sum(len(p.agent_ids) for p in parts))
                full = sum(p.full for p in parts)
                lost = 0
                if req.assign and result.selected:
                    why = None
                    if self.config.shard.decision_records:
                        why = decisions.Pending.of(req, dict(got.results), result, waited_s).build()
                    assigning = tracing.child("ripple.assign", root)
                    lost = yield from self._assign(result, why, req.affinity_key)
                    tracing.end(assigning, picks=len(result.selected), lost=lost)
                if not (lost and not result.selected and attempt + 1 < _RACES):
                    break
            assert result is not None  # the loop ran at least once
            self._record(req.strategy, chosen.max_signal_age_s, time.perf_counter() - t0, got)
            if result.affinity is not None:
                self.metrics.count(self.metrics.affinity_total, result.affinity)
            if req.assign and (full or lost) and not result.selected:
                raise saturated(full + lost, min(p.free_in_s for p in parts))
            return result
        finally:
            tracing.end(
                root,
                picks=None if result is None else len(result.selected),
                degraded=None if result is None else result.degraded,
            )

    async def select_once(
        self, req: SelectRequest, waited_s: float = 0.0, parent: Any = None
    ) -> SelectResult:
        return await drive(self.select_op(req, waited_s, parent))

    async def select(self, req: SelectRequest, parent: Any = None) -> SelectResult:
        """The selection, waiting up to ``wait_s`` for headroom when none has any;
        ``parent``: the caller's trace context (an incoming ``traceparent``)."""
        return await self.flow.select(req, parent)

    def _assign(
        self, result: SelectResult, why: dict[str, Any] | None, key: str | None = None
    ) -> Op[int]:
        """Record the tasks on the owners, on agents that still have headroom. A shard
        that misses the deadline, or whose storage refused the record, leaves its agents
        without an assignment id: chosen, but not counted in flight, and the answer says
        ``degraded``. An agent that another router filled meanwhile is dropped from the
        answer (none left: a saturated answer)."""
        by_shard: dict[int, list[str]] = {}
        for s in result.selected:
            if s.known:
                by_shard.setdefault(self._owner(s.agent_id), []).append(s.agent_id)
        # The decision record travels with the assignment: no call of its own.
        # The key (affinity) is remembered by the shard owning its agent, the first pick.
        first = claim(key, result)
        calls = {s: ("assign", (ids, True, why, first)) for s, ids in by_shard.items()}
        got = yield self.fanout, calls
        if got.degraded:
            self._log_degraded("assign", got)
            result.degraded = True
        ids = {a: aid for part in got.results.values() for a, aid in part.items()}
        answered = {a for s in got.results for a in by_shard[s]}
        picked = len(result.selected)
        result.selected = [
            sel for sel in result.selected if sel.agent_id in ids or sel.agent_id not in answered
        ]
        for sel in result.selected:
            sel.assignment_id = ids.get(sel.agent_id)
        return picked - len(result.selected)  # filled by another router meanwhile

    def _record(self, strategy: str, ages: np.ndarray, took_s: float, got: Gathered) -> None:
        self.metrics.record_selection(strategy, ages, took_s)
        if got.degraded:
            self.metrics.record_degraded()
            self._log_degraded("select", got)

    @staticmethod
    def _log_degraded(what: str, got: Gathered) -> None:
        log.warning(
            "%s answered degraded (%d of %d shards): %s",
            what,
            got.answered,
            got.asked,
            "; ".join(f"shard {s}: {why}" for s, why in sorted(got.failures.items())),
        )

    async def scores(self, req: ScoresRequest) -> ScoresResult:
        return await drive(self.scores_op(req))

    def scores_op(self, req: ScoresRequest) -> Op[ScoresResult]:
        ids = list(dict.fromkeys(req.agent_ids))
        calls = {
            s: ("scores", ([ids[i] for i in pos.tolist()], req.weights))
            for s, pos in enumerate(partition(ids, self.num_shards))
            if len(pos)
        }
        got = yield self.fanout, calls
        self.fanout.all_ok(got)
        if got.degraded:
            self._log_degraded("scores", got)
        merged = {a: sc for part in got.results.values() for a, sc in part.items()}
        return ScoresResult.model_construct(
            scores={a: merged[a] for a in ids if a in merged},
            shards_answered=got.answered,
            shards_total=got.asked,
            degraded=got.degraded,
        )

    async def _on_owner(self, agent_id: str, method: str, *args: Any) -> Any:
        s = self._owner(agent_id)
        return self.fanout.one(await self.fanout.gather({s: (method, (agent_id, *args))}), s)

    async def decision(self, assignment_id: str) -> dict[str, Any]:
        return await drive(self.decision_op(assignment_id))

    def decision_op(self, assignment_id: str) -> Op[dict[str, Any]]:
        """Why an assignment went where it went: its record, from whichever shard keeps
        it (asked of all: an id does not say its shard; this is a rare, human call)."""
        got = yield self.fanout, {s: ("decision", (assignment_id,)) for s in range(self.num_shards)}
        self.fanout.all_ok(got)
        for record in got.results.values():
            if record is not None:
                out: dict[str, Any] = record
                return out
        if got.degraded:  # it may be on the shard that did not answer
            self._log_degraded("decision", got)
            raise Unavailable(
                "a shard that may keep this record did not answer",
                [{"field": "assignment_id", "reason": "retry"}],
            )
        raise NotFound(
            f"no decision record for assignment {assignment_id!r}",
            [{"field": "assignment_id", "reason": "unknown, or it left the ring"}],
        )

    async def agent(self, agent_id: str) -> AgentView:
        result: AgentView = await self._on_owner(agent_id, "agent")
        return result

    async def delete(self, agent_id: str) -> bool:
        return bool(await self._on_owner(agent_id, "delete"))

    async def complete(
        self, agent_id: str, assignment_id: str | None, ok: bool, duration_s: float | None
    ) -> CompleteResult:
        result: CompleteResult = await self._on_owner(
            agent_id, "complete", assignment_id, ok, duration_s
        )
        return result

    async def describe_agent(
        self, agent_id: str, max_concurrency: int | None, labels: dict[str, str] | None
    ) -> AgentView:
        result: AgentView = await self._on_owner(
            agent_id, "describe_agent", max_concurrency, labels
        )
        return result

    async def predict(self, agent_id: str, params: PredictParams) -> OverloadPrediction:
        result: OverloadPrediction = await self._on_owner(agent_id, "predict", params)
        return result

    async def _all(self, method: str, *args: Any) -> Gathered:
        return await self.fanout.gather({s: (method, args) for s in range(self.num_shards)})

    async def overloads(
        self, params: PredictParams, cursor: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of predicted overloads, most likely first: at most ``limit``, and the
        cursor of the next page (None when every shard has been scanned). Each shard
        scans within a time budget, so one call's cost is bounded at any fleet size."""
        starts = decode_cursor(cursor, self.num_shards)
        active = [s for s, row in enumerate(starts) if row is not None]
        per_shard = max(1, limit // max(len(active), 1))
        budget_s = min(0.5, self.fanout.deadline_s / 2)
        got = await self.fanout.gather(
            {s: ("overloads_page", (params, starts[s], per_shard, budget_s)) for s in active}
        )
        self.fanout.all_ok(got)
        if got.degraded:
            self._log_degraded("overloads", got)
        nexts: list[int | None] = [None] * self.num_shards
        items: list[OverloadPrediction] = []
        for s in active:
            if s in got.results:
                page, nexts[s] = got.results[s]
                items += page
            else:
                nexts[s] = starts[s]  # not answered: scan it again on the next page
        items.sort(key=lambda p: -(p.probability or 0.0))
        return {
            "overloads": items,
            "next_cursor": encode_cursor(nexts),
            "shards_answered": got.answered,
            "shards_total": got.asked,
            "degraded": got.degraded,
        }

    async def stats(self) -> dict[str, Any]:
        got = await self._all("stats")
        shards = [
            got.results.get(s, {"shard": s, "up": False, "error": str(got.failures.get(s))})
            for s in range(self.num_shards)
        ]
        for s in shards:
            s.setdefault("up", True)
        # A shard that answers but cannot persist takes no writes: not ready, and why.
        storage_degraded = [
            {"shard": s["shard"], "reason": (s.get("durability") or {}).get("storage_problem")}
            for s in shards
            if (s.get("durability") or {}).get("storage_ok") is False
        ]
        return {
            "shards": shards,
            "shards_up": got.answered,
            "shards_total": self.num_shards,
            "agents": sum(s.get("agents", 0) for s in shards),
            "live_signals": sum(s.get("live_signals", 0) for s in shards),
            "storage_degraded": storage_degraded,
            "ready": got.answered == self.num_shards and not storage_degraded,
        }

    async def own_metrics(self) -> dict[str, Any]:
        """This router's own counters (selections it merged, degraded answers), and the
        latest counters each outside router pushed here (silent ones forgotten)."""
        return {"metrics": self.counters(), "pushed": self.pushed.current()}

    def counters(self) -> Counters:
        """This router's counters, with its flow-control gauges as of now."""
        self.metrics.flow_attained, self.metrics.flow_demanded = self.flow.fairness()
        return self.metrics

    async def absorb(self, source: str, metrics: Counters) -> None:
        """Keep an outside router's cumulative counters (each push replaces the last)."""
        self.pushed.absorb(source, metrics)

    def deployment_info(self) -> dict[str, Any]:
        return {
            "num_shards": self.num_shards,
            "config": self.config.model_dump(),
            "node_id": node_id(),
        }


class RouterActor(PickledCalls, RouterCore):
    """Ray actor shell: builds the Ray transport from the shard handles it is given."""

    def __init__(self, shard_handles: list[Any], config: ServiceConfig) -> None:
        from actors.cluster.adapter import RayTransport

        logging.basicConfig(level=config.log_level)
        super().__init__(Fanout(RayTransport(shard_handles), config.shard_deadline_s), config)

    async def ping(self) -> bool:
        return True


def encode_cursor(rows: list[int | None]) -> str | None:
    """Where each shard resumes, as "12,-,0" ("-": done); None when all are done."""
    if all(r is None for r in rows):
        return None
    return ",".join("-" if r is None else str(r) for r in rows)


def decode_cursor(cursor: str | None, num_shards: int) -> list[int | None]:
    if cursor is None:
        return [0] * num_shards
    parts = cursor.split(",")
    if len(parts) != num_shards or not all(p == "-" or p.isdigit() for p in parts):
        raise InvalidInput(
            "malformed cursor",
            [{"field": "cursor", "reason": "pass back the next_cursor of the previous page"}],
        )
    return [None if p == "-" else int(p) for p in parts]
