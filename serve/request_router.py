"""Ripple as a Ray Serve request router: each replica of a deployment is a Ripple agent.

    from ray.serve.config import RequestRouterConfig

    @serve.deployment(
        num_replicas=3,
        request_router_config=RequestRouterConfig(
            request_router_class="serve.request_router:RippleRequestRouter",
            request_router_kwargs={"namespace": "ripple"},
        ),
    )

How it maps onto Ripple:
- a replica is the agent ``serve:<app>:<deployment>:<replica>``, described with
  ``max_concurrency = max_ongoing_requests``;
- every ``refresh_interval_s`` a background task reports, for each replica, LOAD (the
  requests this router has in flight there over ``max_ongoing_requests``) and LATENCY (the
  replica's mean time per request, relative to the slowest replica), records the requests
  sent and finished since the last refresh as Ripple assignments and completions (one call
  per shard, ``report_tasks``; a send that a full replica refused is neither:
  ``SendLedger``), and fetches every replica's score;
- ``choose_replicas`` never waits on Ripple: it ranks the candidates by the time per
  request that the cached ``predicted_s`` implies (Ripple's prediction, in seconds, of one
  more request there, from the completions it measured) times the requests this router
  holds there now (the cached score less their load when Ripple has no prediction),
  passes over replicas Ripple ejected (unless all are), and picks like Ripple's
  ``balanced`` strategy (at random among the replicas within ``tolerance`` of the best;
  the rest follow in rank order);
- while Ripple cannot be reached (no score yet, or none newer than ``stale_after_s``), or a
  candidate has no score yet, it routes like Serve's default power-of-two router.

Flow control: Serve owns the request here, so Serve's own queueing stays in charge. A
replica's headroom in Ripple is Serve's ``max_ongoing_requests`` (declared as its
``max_concurrency``); when every replica is at it, which Ripple would call saturated, this
router still returns its ranking, each replica refuses what it cannot take, and Serve
keeps the request in its router and tries again with back-off (bounded by the
deployment's ``max_queued_requests``, beyond which Serve answers 503 with its
``BackPressureError``). Ripple's priority bands and tenant fairness apply to selections
made through Ripple (``/v1/select``, the clients, the LiteLLM strategy), not to requests
Serve routes.

Several Serve routers (one per proxy and per handle owner) each report their own LOAD for a
replica; the last report wins, and each router corrects it with its own sends between
refreshes. With one router per deployment (the common handle case) LOAD is exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica

from actors.client.clients import AsyncRippleClient, connect_async
from actors.core.merge import balanced_picks
from actors.core.models import Weights

log = logging.getLogger(__name__)

# Requests whose completion never arrives (a retry that re-chose, a lost callback) are
# forgotten oldest first beyond this many, so the start-time map cannot grow without end.
MAX_TRACKED_REQUESTS = 100_000
# Weight of the newest observation in a replica's mean latency.
LATENCY_EWMA_ALPHA = 0.2


class SendLedger:
    """The requests this router sent and saw end, as Ripple assignments and completions.

    Serve calls ``on_send_request`` for every send, also one a full replica then refuses
    (strict ``max_ongoing_requests``, Serve's default outside Ray Client), and fires
    ``on_request_completed`` for the refused send too, before it chooses again. Only an
    accepted send reaches ``on_request_routed``. Counting a refusal as a task would record
    a successful completion a few milliseconds long, which teaches Ripple that the fullest
    replica is the fastest. So a send that ends without having been accepted, while sends
    to that replica await Serve's verdict, is a refusal, taken back: out of the assignments
    not yet reported (nearly always: a refusal takes about a millisecond, a report is sent
    every ``refresh_interval_s``), else counted in ``orphaned`` and left for Ripple to close
    at ``assignment_ttl_s``. Sends without a verdict (Ray Client, Serve's broadcast) end as
    completions, as before the first acceptance is seen.
    """

    def __init__(self, max_tracked: int = MAX_TRACKED_REQUESTS) -> None:
        self.max_tracked = max_tracked
        self.assigned: list[str] = []
        self.completed: list[tuple[str, bool, float | None]] = []
        self.awaiting: dict[Any, int] = defaultdict(int)  # sends per replica, no verdict yet
        # (replica, request id) of sends a replica accepted, oldest first.
        self.accepted: dict[tuple[Any, str], None] = {}
        self.strict = False  # seen an acceptance: replicas give verdicts
        self.refused = 0
        self.orphaned = 0

    def sent(self, replica: Any, agent: str) -> None:
        self.awaiting[replica] += 1
        self.assigned.append(agent)

    def accepted_send(self, replica: Any, request_id: str) -> None:
        self.strict = True
        self.awaiting[replica] = max(0, self.awaiting[replica] - 1)
        self.accepted[(replica, request_id)] = None
        if len(self.accepted) > self.max_tracked:  # a completion that never came
            del self.accepted[next(iter(self.accepted))]

    def ended(self, replica: Any, agent: str, request_id: str) -> bool:
        """A send ended; True when it was a request served (a completion), False when the
        replica refused it."""
        served = self.accepted.pop((replica, request_id), False) is None
        if not served and self.strict and self.awaiting[replica] > 0:
            self.awaiting[replica] -= 1
            self.refused += 1
            try:
                self.assigned.remove(agent)
            except ValueError:  # already reported
                self.orphaned += 1
            return False
        # No duration: what this router times is the request's whole stay, queueing at the
        # replica included, not the replica's work on it; reported as work, Ripple would
        # take the queue for requests run side by side. It learns the time in system from
        # the completion itself.
        self.completed.append((agent, True, None))
        return True

    def forget(self, replica: Any) -> None:
        self.awaiting.pop(replica, None)

    def take(self) -> tuple[list[str], list[tuple[str, bool, float | None]]]:
        """What to report now (tasks opened, tasks ended), emptied."""
        out = (self.assigned, self.completed)
        self.assigned, self.completed = [], []
        return out


class RippleRequestRouter(PowerOfTwoChoicesRequestRouter):
    """Ranks replicas with Ripple's scores, refreshed in the background."""

    def initialize_state(
        self,
        namespace: str = "ripple",
        refresh_interval_s: float = 0.2,
        stale_after_s: float = 2.0,
        weights: dict[str, float] | None = None,
        tolerance: float = 0.02,
        seed: int | None = None,
        **_: Any,
    ) -> None:
        self.namespace = namespace
        self.refresh_interval_s = refresh_interval_s
        self.stale_after_s = stale_after_s
        # Load first; latency so a replica that is slow per request is sent less even
        # when its queue is as short as a fast one's.
        self.weights = Weights.model_validate(weights or {"load": 0.7, "latency": 0.3})
        self.load_weight = float(self.weights.vector()[0])
        self.tolerance = tolerance
        self.rng = np.random.default_rng(seed)
        self.client: AsyncRippleClient | None = None
        self.inflight: dict[ReplicaID, int] = defaultdict(int)
        self.latency_s: dict[ReplicaID, float] = {}
        self.started: dict[str, float] = {}
        self.ledger = SendLedger()
        self.described: set[ReplicaID] = set()
        self.scores: dict[ReplicaID, float] = {}
        self.predicted_s: dict[ReplicaID, float] = {}
        self.health: dict[ReplicaID, str] = {}
        self.inflight_at_score: dict[ReplicaID, int] = {}
        self.scored_at = -float("inf")
        self.refresher: asyncio.Task[None] | None = None
        self.last_error_logged = -float("inf")
        self.routed_by_ripple = 0
        self.routed_by_fallback = 0

    # ------------------------------------------------------------------ identity
    def agent_id(self, replica_id: ReplicaID) -> str:
        dep = replica_id.deployment_id
        return f"serve:{dep.app_name or 'default'}:{dep.name}:{replica_id.unique_id}"

    # ------------------------------------------------------------------ routing
    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        self._ensure_refresher()
        if pending_request is not None:
            self._track_start(pending_request.metadata.internal_request_id)
        fresh = time.monotonic() - self.scored_at < self.stale_after_s
        multiplexed = pending_request is not None and pending_request.metadata.multiplexed_model_id
        if not fresh or multiplexed or not candidate_replicas:
            self.routed_by_fallback += 1
            return await super().choose_replicas(candidate_replicas, pending_request)
        now_scores = []
        ejected = []
        for r in candidate_replicas:
            rid = r.replica_id
            cached = self.scores.get(rid)
            if cached is None:  # a replica newer than the last refresh
                self.routed_by_fallback += 1
                return await super().choose_replicas(candidate_replicas, pending_request)
            sent_since = self.inflight[rid] - self.inflight_at_score.get(rid, 0)
            now_scores.append(self._rank(rid, cached, sent_since / r.max_ongoing_requests))
            ejected.append(self.health.get(rid, "healthy") == "ejected")
        scores = np.array(now_scores)
        if any(ejected) and not all(ejected):
            # Ejected by Ripple (it failed too often, seen by every router): last resort.
            scores[np.array(ejected)] = -np.inf
        order = np.lexsort((self.rng.random(len(scores)), -scores))
        picks = balanced_picks(scores, order, len(scores), self.tolerance, self.rng)
        self.routed_by_ripple += 1
        # One replica per rank: Serve tries them in turn when the first one is full.
        return [[candidate_replicas[i]] for i in picks.tolist()]

    def _rank(self, rid: ReplicaID, score: float, sent_share: float) -> float:
        """Higher first. With Ripple's ``predicted_s`` (a time: what one more request there
        was predicted to take when the scores were fetched, from the completions it
        measured), ``-log`` of the time per request it implies, times the requests this
        router holds there now (its own exact count, fresher than the cached figure);
        without one, the score less the share of the replica's slots filled since."""
        predicted = self.predicted_s.get(rid)
        if predicted is not None and predicted > 0:
            per_request = predicted / (self.inflight_at_score.get(rid, 0) + 1)
            return -float(np.log(per_request * (self.inflight[rid] + 1)))
        return score - self.load_weight * sent_share

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)
        self.inflight[replica_id] += 1
        self.ledger.sent(replica_id, self.agent_id(replica_id))

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        super().on_request_routed(pending_request, replica_id, result)
        self.ledger.accepted_send(replica_id, pending_request.metadata.internal_request_id)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        super().on_request_completed(replica_id, internal_request_id)
        if self.inflight[replica_id] > 0:
            self.inflight[replica_id] -= 1
        if not self.ledger.ended(replica_id, self.agent_id(replica_id), internal_request_id):
            return  # refused: Serve chooses again, which restarts the clock
        t0 = self.started.pop(internal_request_id, None)
        took_s = None if t0 is None else time.monotonic() - t0
        if took_s is not None:
            old = self.latency_s.get(replica_id)
            self.latency_s[replica_id] = (
                took_s if old is None else old + LATENCY_EWMA_ALPHA * (took_s - old)
            )

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.scores.pop(replica_id, None)
        self.predicted_s.pop(replica_id, None)
        self.health.pop(replica_id, None)
        self.inflight.pop(replica_id, None)
        self.latency_s.pop(replica_id, None)
        self.ledger.forget(replica_id)

    def _track_start(self, request_id: str) -> None:
        # Re-chosen on a retry: the clock restarts, as the replica sees it.
        self.started.pop(request_id, None)
        self.started[request_id] = time.monotonic()
        if len(self.started) > MAX_TRACKED_REQUESTS:
            del self.started[next(iter(self.started))]

    # ------------------------------------------------------------------ refresh
    def _ensure_refresher(self) -> None:
        if self.refresher is None or self.refresher.done():
            self.refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            try:
                if self.client is None:
                    # Looking the actors up blocks on the GCS: keep it off the event loop.
                    self.client = await asyncio.to_thread(connect_async, self.namespace)
                await self.refresh()
            except Exception as e:  # Ripple down or restarting: route like Serve meanwhile
                now = time.monotonic()
                if now - self.last_error_logged > 30.0:
                    self.last_error_logged = now
                    log.warning("Ripple unreachable, routing with power of two: %s", e)
            await asyncio.sleep(self.refresh_interval_s)

    async def refresh(self) -> None:
        """One round trip set: tasks, then LOAD and LATENCY, then scores."""
        client = self.client
        assert client is not None
        replicas = dict(self.curr_replicas)
        for rid, r in replicas.items():
            if rid not in self.described:
                await client.describe(
                    self.agent_id(rid),
                    max_concurrency=r.max_ongoing_requests,
                    labels={"source": "ray-serve", "deployment": rid.deployment_id.name},
                )
                self.described.add(rid)
        self.described &= set(replicas)
        # Tasks first: Ripple counts an assignment on top of a LOAD report only when it
        # is recorded after the report was measured, and this LOAD already includes them.
        assigned, completed = self.ledger.take()
        if assigned or completed:
            await client.report_tasks(assigned, completed)
        inflight_at = {rid: self.inflight[rid] for rid in replicas}
        slowest_s = max(self.latency_s.values(), default=0.0)
        signals: list[dict[str, Any]] = []
        ttl_s = max(10 * self.refresh_interval_s, 5.0)
        for rid, r in replicas.items():
            agent = self.agent_id(rid)
            load = min(1.0, inflight_at[rid] / r.max_ongoing_requests)
            signals.append(
                {"agent_id": agent, "signal_type": "LOAD", "value": load, "ttl_s": ttl_s}
            )
            lat = self.latency_s.get(rid)
            if lat is not None and slowest_s > 0:
                signals.append(
                    {
                        "agent_id": agent,
                        "signal_type": "LATENCY",
                        "value": lat / slowest_s,
                        "ttl_s": ttl_s,
                    }
                )
        if signals:
            await client.register(signals)
        if not replicas:
            return
        got = await client.scores([self.agent_id(rid) for rid in replicas], self.weights)
        by_agent = {self.agent_id(rid): rid for rid in replicas}
        mine = {by_agent[a]: s for a, s in got.scores.items() if a in by_agent}
        self.scores = {rid: s.score for rid, s in mine.items()}
        self.predicted_s = {rid: s.predicted_s for rid, s in mine.items() if s.predicted_s}
        self.health = {rid: s.health for rid, s in mine.items()}
        self.inflight_at_score = inflight_at
        self.scored_at = time.monotonic()
