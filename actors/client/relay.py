"""Counters across processes, in one place: routers outside the router actors (a Serve
replica, a ``fan_out="local"`` client) push theirs to every router actor, and a scrape
gathers every shard's and every router's (with what they relay) into one total that
never goes backwards.

- A push carries an outside router's cumulative ``Counters``; the router actors keep the
  latest per source (``PushedCounters``), one source each however many routers relay it.
- A scrape sums the sources through ``Monotonic``: a source that does not answer keeps its
  last counts, a restarted one adds on, and a pushed source silent for
  ``PUSHED_SOURCE_TTL_S`` is retired (its counts kept, its keys gone).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.cluster.adapter import Calls, Fanout, Op
from actors.cluster.router import RouterCore
from actors.core.metric_sources import PUSHED_SOURCE_TTL_S, Monotonic
from actors.core.metrics import Counters

log = logging.getLogger(__name__)
PUSH_INTERVAL_S = 1.0  # how often an outside router's counters reach the router actors


class Relay:
    def __init__(self, shards: Fanout, routers: Fanout, num_routers: int, source: str) -> None:
        self._shards, self._routers = shards, routers
        self.num_routers = num_routers
        self.source = source
        self._monotonic = Monotonic()
        self._seen_at: dict[str, float] = {}  # when each pushed source was last relayed
        self._pushed_at = time.monotonic()
        self._pushes: list[Any] = []

    # ---------------------------------------------------------------- pushing
    def _absorb_calls(self, source: str, router: RouterCore) -> Calls:
        return {j: ("absorb", (source, router.counters())) for j in range(self.num_routers)}

    def push_op(self, source: str, router: RouterCore) -> Op[None]:
        """Give every router actor ``router``'s cumulative counters, so scrapes anywhere
        count its selections once (a lost push is made good by the next one)."""
        self._pushed_at = time.monotonic()
        yield self._routers, self._absorb_calls(source, router)

    def push_if_due(self, router: RouterCore) -> None:
        """At most once a push interval, without waiting for the answers (a selection
        must not wait on the routers); the previous push's answers are collected now."""
        if time.monotonic() - self._pushed_at < PUSH_INTERVAL_S:
            return
        self._pushed_at = time.monotonic()
        self._reap_pushes()
        transport = self._routers.transport
        calls = self._absorb_calls(self.source, router)
        self._pushes += [transport.submit(j, method, args) for j, (method, args) in calls.items()]

    def _reap_pushes(self) -> None:
        """Take the answers of earlier pushes that have arrived: a router that was down
        is a debug line here (the next push carries the same counts), not an answer
        nobody read, which Ray reports as an unhandled error."""
        transport = self._routers.transport
        ready, self._pushes = transport.wait(self._pushes, 0.0) if self._pushes else ([], [])
        for ref in ready:
            try:
                transport.get(ref)
            except Exception as exc:
                log.debug("pushing selection counters to a router failed: %s", exc)

    # ---------------------------------------------------------------- scraping
    def snapshot_op(self) -> Op[dict[str, Any]]:
        """The whole cluster's counters: every shard's and every router's (not just one
        router's, which would make counters jump between scrapes), never going backwards.
        Gauges and ``shard_up`` are as of this scrape."""
        num_shards = self._shards.num_shards
        shards = yield self._shards, {s: ("counters", ()) for s in range(num_shards)}
        routers = yield self._routers, {j: ("own_metrics", ()) for j in range(self.num_routers)}
        fresh: dict[str, Counters | None] = {
            f"shard-{s}": shards.results.get(s) for s in range(num_shards)
        }
        fresh |= {
            f"router-{j}": (routers.results[j]["metrics"] if j in routers.results else None)
            for j in range(self.num_routers)
        }
        now = time.monotonic()
        for r in routers.results.values():
            for source, counters in r.get("pushed", {}).items():
                fresh[f"pushed-{source}"] = counters
                self._seen_at[f"pushed-{source}"] = now
        for source, seen in list(self._seen_at.items()):
            if source in fresh:
                continue
            if now - seen > PUSHED_SOURCE_TTL_S:  # gone: the routers forgot it too
                self._monotonic.retire(source)
                del self._seen_at[source]
            else:  # not relayed this time (a router down or restarted): as last seen
                fresh[source] = None
        return {
            "metrics": self._monotonic.total(fresh),
            "shard_up": {s: s in shards.results for s in range(num_shards)},
            "shard_agents": {s: snap.agents for s, snap in shards.results.items()},
        }
