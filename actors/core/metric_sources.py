"""Counters from many processes added up: totals that never go backwards when a shard or
a router restarts (``Monotonic``), and the counters outside routers push, kept while
they keep pushing (``PushedCounters``). What one process counts is ``metrics``."""

from __future__ import annotations

import time
from collections.abc import Callable

from actors.core.metrics import Counters


class Monotonic:
    """Counters that never go backwards across scrapes, per source (a shard or a router).

    A source that does not answer keeps its last counters. A source in a new incarnation
    (or whose counters went down) restarted: what it had counted beyond the base it
    restored (everything, when it came back empty) becomes an offset added on. Gauges
    (agents, live signals, in flight) are taken as they are. A source gone for good
    (``retire``) leaves its counts in one sum and its keys go, so memory stays bounded."""

    def __init__(self) -> None:
        self._last: dict[str, Counters] = {}
        self._offset: dict[str, Counters] = {}
        self._retired = Counters()

    def total(self, fresh: dict[str, Counters | None]) -> Counters:
        out = Counters()
        _merge_counters(out, self._retired)
        for source, snap in fresh.items():
            last = self._last.get(source)
            if snap is None:  # no answer this time: its counters as last seen
                if last is not None:
                    _merge_counters(out, last)
                    if source in self._offset:
                        _merge_counters(out, self._offset[source])
                continue
            if last is not None and (
                snap.incarnation != last.incarnation or snap.count_total() < last.count_total()
            ):
                base = snap.restored_base or Counters()
                self._offset.setdefault(source, Counters()).merge(last.shortfall(base))
            self._last[source] = snap
            out.merge(snap)
            if source in self._offset:
                _merge_counters(out, self._offset[source])
        return out

    def sources(self) -> set[str]:
        return set(self._last)

    def retire(self, source: str) -> None:
        """A source that will not come back: its last counts stay in every total."""
        last = self._last.pop(source, None)
        if last is not None:
            _merge_counters(self._retired, last)
        offset = self._offset.pop(source, None)
        if offset is not None:
            _merge_counters(self._retired, offset)


# A pushed source silent this long is gone (a replica that stopped, a client that ended).
PUSHED_SOURCE_TTL_S = 300.0


class PushedCounters:
    """The latest cumulative counters each outside router pushed (a Serve replica, a
    ``fan_out="local"`` client), kept by a router actor. A source silent for ``ttl_s`` is
    forgotten: replicas come and go, and each would otherwise stay for the router's life."""

    def __init__(
        self, ttl_s: float = PUSHED_SOURCE_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._latest: dict[str, tuple[Counters, float]] = {}

    def absorb(self, source: str, counters: Counters) -> None:
        self._latest[source] = (counters, self._clock())

    def current(self) -> dict[str, Counters]:
        cutoff = self._clock() - self.ttl_s
        self._latest = {s: v for s, v in self._latest.items() if v[1] >= cutoff}
        return {s: c for s, (c, _) in self._latest.items()}


def _merge_counters(into: Counters, snap: Counters) -> None:
    """Counters and histograms only: a gauge of a silent or restarted source is stale."""
    into.merge(snap, gauges=False)
