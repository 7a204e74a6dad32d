"""The tasks a shard's routers place: opened, reported and closed (DESIGN §4).

``assign`` opens a task on each chosen agent (a selection's second step), ``report_tasks``
records tasks that a router outside Ripple placed and saw end, ``complete`` closes one.
The records live in ``inflight.InFlight``; this part adds the WAL records (logged before
anything changes) and the counters. ``ShardState`` composes it, as it does the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from actors.core import wal
from actors.core.health import Health
from actors.core.inflight import InFlight
from actors.core.metrics import Counters
from actors.core.models import CompleteResult
from actors.core.speed import Speed
from actors.core.table import AgentTable

# Hands one WAL record (made only when a log is kept) to the state's journal.
Log = Callable[[Callable[[], bytes]], None]


class Tasks:
    def __init__(
        self,
        table: AgentTable,
        inflight: InFlight,
        health: Health,
        speed: Speed,
        metrics: Counters,
        log: Log,
    ) -> None:
        self.table = table
        self.inflight = inflight
        self.health = health
        self.speed = speed
        self.metrics = metrics
        self._log = log

    def assign_with_ids(
        self, pairs: Sequence[tuple[str, str | None]], now: float
    ) -> list[tuple[str, str]]:
        """Open one task on each known agent, with the id given (None: a new one); a WAL
        replay gives back the ids handed out before. Unknown agents get no state.
        Returns (agent, id) of each task opened."""
        planned = [
            (a, r, self.inflight.new_id() if wanted is None else wanted)
            for a, wanted in pairs
            if (r := self.table.row(a)) is not None
        ]
        # A replay refuses what this call refuses (the same bounds on the same state).
        if planned:
            self._log(lambda: wal.encode("assign", now, {"pairs": [(a, i) for a, _, i in planned]}))
        return [
            (a, aid) for a, r, aid in planned if self.inflight.assign(a, r, now, aid) is not None
        ]

    def report(
        self,
        assigned: Sequence[str],
        completed: Sequence[tuple[str, bool, float | None]],
        now: float,
    ) -> dict[str, int]:
        """Tasks that a router outside Ripple placed and saw end (the Serve request router,
        the LiteLLM strategy), in one call: each id in ``assigned`` opens a task on that
        agent if it is known; each ``(agent_id, ok, duration_s)`` closes its oldest one."""
        opened = len(self.assign_with_ids([(a, None) for a in assigned], now))
        released = sum(self.complete(a, None, ok, d, now).released for a, ok, d in completed)
        return {"assigned": opened, "released": released}

    def complete(
        self,
        agent_id: str,
        assignment_id: str | None,
        ok: bool,
        duration_s: float | None,
        now: float,
    ) -> CompleteResult:
        """A task ended: the load estimate drops now, not at the next LOAD report. An
        unknown agent, or an ``assignment_id`` that is not open, gets ``released: false``
        and changes nothing (a caller must not be able to talk an agent's estimate down)."""
        r = self.table.row(agent_id)
        if r is None or (
            assignment_id is not None and not self.inflight.is_open(agent_id, assignment_id)
        ):
            return CompleteResult(released=False, assignment_id=assignment_id)
        args = {"agent": agent_id, "id": assignment_id, "ok": ok, "duration_s": duration_s}
        self._log(lambda: wal.encode("complete", now, args))
        out = self.inflight.complete(agent_id, r, assignment_id, ok, duration_s, now)
        # What the outcome teaches: health from every outcome, speed from successes only
        # (a failure's time says nothing about how long real work takes).
        if self.health.record(r, ok, now):
            self.metrics.record_ejection()
        if ok:
            self.speed.learn(r, duration_s, out.seen_s, out.ahead)
        self.metrics.record_completion(ok)
        return CompleteResult(released=out.released, assignment_id=out.assignment_id)
